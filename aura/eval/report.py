"""The evaluation report: scores per task and system, chance levels, report.json, report.md and the plots."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aura.eval.items import ASR_TASK, EvalItem
from aura.eval.latency import THROUGHPUT_BATCH, Record
from aura.metrics import error_rates, qa_scores


def score(items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Metrics per task: WER/CER for `asr` (reference = the response), EM/F1/containment otherwise."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} examples but {len(predictions)} predictions")
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_task.setdefault(item.task, []).append(i)
    metrics: dict[str, dict[str, float]] = {}
    for task, indices in sorted(by_task.items()):
        golds = [items[i].response for i in indices]
        preds = [predictions[i] for i in indices]
        if task == ASR_TASK:
            rates = error_rates(golds, preds)
            metrics[task] = {"wer": rates.wer, "cer": rates.cer, "n": len(indices)}
        else:
            rivals = [items[i].distractors for i in indices]
            known = None if any(r is None for r in rivals) else rivals
            metrics[task] = {**qa_scores(preds, golds, known), "n": len(indices)}
    return metrics


def chance_accuracy(items: Sequence[EvalItem]) -> dict[str, float]:
    """Per QA task whose examples all list distractors: the accuracy of picking one of the candidates the
    prompt offers uniformly, the floor a system that does not hear the question still reaches."""
    by_task: dict[str, list[int | None]] = {}  # per example: how many candidates the prompt offers
    for item in items:
        if item.task != ASR_TASK:
            candidates = None if item.distractors is None else 1 + len(item.distractors)
            by_task.setdefault(item.task, []).append(candidates)
    return {
        task: sum(1 / n for n in counts if n) / len(counts)
        for task, counts in sorted(by_task.items())
        if None not in counts
    }


@dataclass
class SystemReport:
    name: str
    records: list[Record]
    metrics: dict[str, dict[str, float]]
    latency: dict[str, Any]

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.records if r.error is not None]


# ------------------------------------------------------------------------------------------ report
def _headline(task: str, values: dict[str, float]) -> tuple[str, float]:
    """The one accuracy number a task is plotted by (higher is better)."""
    if task == ASR_TASK:
        return "1 - WER", max(0.0, 1.0 - values["wer"])
    if "accuracy" in values:
        return "accuracy", values["accuracy"]
    return "answer contained", values["contained"]


def _markdown(reports: Sequence[SystemReport], n: int, data: str, chance: dict[str, float]) -> str:
    tasks = sorted({t for r in reports for t in r.metrics})
    columns = []
    for task in tasks:
        keys = ["wer", "cer"] if task == ASR_TASK else ["em", "f1", "contained", "accuracy"]
        columns += [(task, k) for k in keys if any(k in r.metrics.get(task, {}) for r in reports)]
    header = ["system"] + [f"{t} {k.upper() if k in ('wer', 'cer', 'em') else k}" for t, k in columns]
    header += ["TTFT ms (p10-p90)", "total ms", "RTF", "ex/s b1", "ex/s b8", "failed"]
    lines = [f"# aura eval: {n} examples from `{data}`", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for report in reports:
        cells = [report.name]
        for task, key in columns:
            value = report.metrics.get(task, {}).get(key)
            cells.append("" if value is None else f"{100 * value:.1f}%")
        lat = report.latency
        if lat:
            cells.append(f"{lat['ttft_ms_median']:.0f} ({lat['ttft_ms_p10']:.0f}-{lat['ttft_ms_p90']:.0f})")
            cells += [f"{lat['total_ms_median']:.0f}", f"{lat['rtf']:.3f}"]
            for b in (1, THROUGHPUT_BATCH):
                tp = lat.get(f"throughput_b{b}")
                cells.append(f"{tp['examples_per_s']:.2f}" if tp else "")
        else:
            cells += ["", "", "", "", ""]
        cells.append(str(len(report.failures)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "WER/CER after Whisper's English normaliser; EM/F1 with SQuAD normalisation; contained = the gold "
        "answer appears in the reply; accuracy = it does and no distractor the prompt offers does; TTFT from the moment the "
        "audio is in memory; RTF = total time / clip length (median); throughput = examples per second.",
    ]
    if chance:
        floors = ", ".join(f"{task} {100 * value:.1f}%" for task, value in chance.items())
        lines += [
            "",
            f"Chance accuracy (one of the candidates each prompt offers, picked uniformly): {floors}.",
        ]
    return "\n".join(lines) + "\n"


def _plots(reports: Sequence[SystemReport], out: Path, chance: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "accuracy_vs_ttft.png", out / "latency.png"]
    _plot_accuracy(plt, reports, chance, paths[0])
    _plot_latency(plt, reports, paths[1])
    return paths


def _plot_accuracy(plt: Any, reports: Sequence[SystemReport], chance: dict[str, float], path: Path) -> None:
    """Each system's accuracy per task against its median time to first token (p10-p90 bars)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    markers = "osD^v<>"
    tasks = sorted({t for r in reports for t in r.metrics})
    for ri, report in enumerate(reports):
        lat = report.latency
        if not lat:
            continue
        for ti, task in enumerate(tasks):
            if task not in report.metrics:
                continue
            label, value = _headline(task, report.metrics[task])
            x = lat["ttft_ms_median"]
            ax.errorbar(
                x,
                value,
                xerr=[[x - lat["ttft_ms_p10"]], [lat["ttft_ms_p90"] - x]],
                fmt=markers[ti % len(markers)],
                color=f"C{ri}",
                capsize=3,
                label=f"{report.name} / {task} ({label})",
            )
    for task, floor in chance.items():
        ax.axhline(floor, color="grey", linestyle=":", label=f"chance / {task}")
    timed = [r.latency["ttft_ms_median"] for r in reports if r.latency]
    if timed and max(timed) > 10 * min(timed):
        ax.set_xscale("log")
    ax.set_xlabel("time to first token, ms (median, p10-p90)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("accuracy vs time to first token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_latency(plt: Any, reports: Sequence[SystemReport], path: Path) -> None:
    """Per-example time to first token and total time, one box per system."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.name for r in reports]
    for ax, key, title in ((axes[0], "ttft_s", "time to first token"), (axes[1], "total_s", "total time")):
        data = [
            [1000 * getattr(rec, key) for rec in r.records if rec.error is None] or [np.nan] for r in reports
        ]
        ax.boxplot(data, tick_labels=names, showfliers=True)
        for i, values in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(values))
            ax.scatter(np.full(len(values), i) + jitter, values, s=8, alpha=0.5, color=f"C{i - 1}")
        ax.set_ylabel("ms per example")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("per-example latency (batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    reports: Sequence[SystemReport], items: Sequence[EvalItem], data: str, out: Path
) -> dict[str, Any]:
    """`report.json`, `report.md`, `predictions.jsonl` and the two PNG plots under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "data": data,
        "n": len(items),
        "tasks": dict(Counter(item.task for item in items)),
        "chance_accuracy": chance_accuracy(items),
        "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "systems": {
            r.name: {
                "metrics": r.metrics,
                "latency": r.latency,
                "failed": len(r.failures),
                "failures": [{"id": f.id, "error": f.error} for f in r.failures],
            }
            for r in reports
        },
    }
    (out / "report.md").write_text(_markdown(reports, len(items), data, report["chance_accuracy"]))
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for r in reports:
            for rec in r.records:
                handle.write(json.dumps({"system": r.name, **asdict(rec)}) + "\n")
    report["plots"] = [str(p) for p in _plots(reports, out, report["chance_accuracy"])]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
