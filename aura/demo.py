"""`aura demo`: the whole idea on this CPU in one command.

Speech is synthesized (entity-disjoint train/test splits, held-out voices for test), the packaged Whisper
is distilled into the packaged SmolLM2 (distillation stage, then joint stage), the `bridge` baseline is
trained on the same data with the same number of LM steps, and `aura eval` (aura, cascade, bridge,
text) and `aura diagnose` produce the numbers and plots. Every stage leaves a `.done` marker in its
folder, so a rerun reuses finished stages (data, teacher cache, checkpoints) unless `--fresh`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aura.config import load_config
from aura.data.manifest import read_manifest, write_manifest
from aura.data.synth import synthesize

RECIPES = Path(__file__).parent / "recipes"
DONE = ".done"


@dataclass(frozen=True)
class DemoBudget:
    """Examples and steps of one demo size; chosen by measurement on a 2-core CPU (see README)."""

    train_asr: int
    train_qa: int  # per QA task (context-qa, spoken-qa)
    test_asr: int
    test_qa: int
    distill_steps: int
    joint_steps: int
    throughput_items: int
    max_new_tokens: int


QUICK = DemoBudget(
    train_asr=48,
    train_qa=24,
    test_asr=6,
    test_qa=6,
    distill_steps=40,
    joint_steps=10,
    throughput_items=8,
    max_new_tokens=24,
)
FULL = DemoBudget(
    train_asr=320,
    train_qa=160,
    test_asr=24,
    test_qa=24,
    distill_steps=300,
    joint_steps=80,
    throughput_items=16,
    max_new_tokens=48,
)


class Stage:
    """A named, timed, resumable step: skipped when its folder holds the `.done` marker."""

    def __init__(self, console: Console, root: Path, fresh: bool):
        self.console, self.root, self.fresh = console, root, fresh
        self.times: dict[str, float] = {}

    def run(self, name: str, folder: Path, work: Callable[[], Any], resumable: bool = False) -> None:
        """Run `work` into `folder`; a `resumable` stage (training) keeps an interrupted folder to resume it."""
        marker = folder / DONE
        if marker.is_file() and not self.fresh:
            self.console.rule(f"[bold]{name}[/] — reused {folder}")
            self.times[name] = 0.0
            return
        if folder.exists() and (self.fresh or not resumable):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.console.rule(f"[bold]{name}[/]")
        start = time.perf_counter()
        work()
        self.times[name] = time.perf_counter() - start
        marker.write_text(f"{self.times[name]:.1f} s\n")
        self.console.print(f"[green]{name} done in {self.times[name]:.0f} s[/]")


def _merge(parts: list[Path], out: Path) -> Path:
    """One manifest from several (audio paths re-rooted at the merged file's folder)."""
    return write_manifest([ex for part in parts for ex in read_manifest(part)], out)


def _synth_data(budget: DemoBudget, folder: Path) -> None:
    sets = {
        "train": [("asr", budget.train_asr), ("context-qa", budget.train_qa), ("spoken-qa", budget.train_qa)],
        "test": [("asr", budget.test_asr), ("context-qa", budget.test_qa)],
    }
    for split, tasks in sets.items():
        parts = [
            synthesize(task, n, folder / f"{split}-{task}", split=split, seed=0 if split == "train" else 1)
            for task, n in tasks
        ]
        if split == "train":
            _merge(parts, folder / "train.jsonl")


def _train(recipe: str, run_dir: Path, overrides: list[str]) -> None:
    """Train a stage, continuing an earlier demo run's interrupted (or finished) one in `run_dir`."""
    from aura.train import train

    train(load_config(RECIPES / recipe, overrides), run_dir, resume=(run_dir / "config.yaml").is_file())


def run_demo(out: str | Path = "aura-demo", quick: bool = False, fresh: bool = False) -> dict[str, Any]:
    """Run every stage into `out` and print the results table; returns the eval report."""
    from aura.diagnose import diagnose
    from aura.evaluate import run_eval

    console = Console(width=None if sys.stdout.isatty() else 120)
    budget = QUICK if quick else FULL
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stage = Stage(console, root, fresh)
    data, distill_run, joint_run, bridge_run = (root / n for n in ("data", "distill", "joint", "bridge"))
    train_data = f"data.train={data / 'train.jsonl'}"
    started = time.perf_counter()

    stage.run("1/6 synthesize speech", data, lambda: _synth_data(budget, data))
    stage.run(
        "2/6 distil Whisper into the LLM (distillation stage)",
        distill_run,
        lambda: _train(
            "demo.yaml",
            distill_run,
            [train_data, "train.stage=distill", f"train.max_steps={budget.distill_steps}"],
        ),
        resumable=True,
    )
    stage.run(
        "3/6 joint stage (distillation + LM)",
        joint_run,
        lambda: _train(
            "demo.yaml",
            joint_run,
            [
                train_data,
                "train.stage=joint",
                f"train.max_steps={budget.joint_steps}",
                f"train.init_from={distill_run}",
            ],
        ),
        resumable=True,
    )
    stage.run(
        "4/6 bridge baseline (encoder → projector → LLM)",
        bridge_run,
        lambda: _train(
            "demo.yaml",
            bridge_run,
            [train_data, "model.arch=bridge", "train.stage=joint", f"train.max_steps={budget.joint_steps}"],
        ),
        resumable=True,
    )
    eval_dir, diag_dir = root / "eval", root / "diagnose"
    stage.run(
        "5/6 evaluate aura, cascade, bridge, text",
        eval_dir,
        lambda: run_eval(
            [data / "test-asr" / "manifest.jsonl", data / "test-context-qa" / "manifest.jsonl"],
            "aura,cascade,bridge,text",
            eval_dir,
            model=joint_run / "final",
            bridge_model=bridge_run / "final",
            throughput_items=budget.throughput_items,
            max_new_tokens=budget.max_new_tokens,
        ),
    )
    stage.run(
        "6/6 diagnose alignment",
        diag_dir,
        lambda: diagnose(joint_run, data / "test-asr" / "manifest.jsonl", diag_dir, compare_untrained=True),
    )
    report = json.loads((eval_dir / "report.json").read_text())
    alignment = json.loads((diag_dir / "alignment.json").read_text())
    _print_summary(console, report, alignment, stage.times, time.perf_counter() - started, root, joint_run)
    return report


def _headline(metrics: dict[str, Any], task: str, key: str) -> float | None:
    value = metrics.get(task, {}).get(key)
    return None if value is None else float(value)


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "—" if value is None else pattern.format(value)


def _print_summary(
    console: Console,
    report: dict[str, Any],
    alignment: dict[str, Any],
    times: dict[str, float],
    total: float,
    root: Path,
    joint_run: Path,
) -> None:
    systems = report["systems"]
    cascade_ttft = systems.get("cascade", {}).get("latency", {}).get("ttft_ms_median")
    table = Table(title=f"AuRA demo — {report['n']} test examples, held-out voices and entities")
    for column in (
        "system",
        "context-QA accuracy",
        "context-QA F1",
        "ASR WER",
        "TTFT ms",
        "speed-up vs cascade",
    ):
        table.add_column(column, justify="right" if column != "system" else "left")
    for name, entry in systems.items():
        metrics, latency = entry.get("metrics", {}), entry.get("latency", {})
        qa = metrics.get("context-qa", {})
        ttft = latency.get("ttft_ms_median")
        speedup = cascade_ttft / ttft if cascade_ttft and ttft else None
        table.add_row(
            name,
            _fmt(_headline(metrics, "context-qa", "accuracy" if "accuracy" in qa else "contained")),
            _fmt(_headline(metrics, "context-qa", "f1")),
            _fmt(_headline(metrics, "asr", "wer"), "{:.0%}"),
            _fmt(ttft, "{:.0f}"),
            _fmt(speedup, "{:.2f}×"),
        )
    console.print(table)
    layers = alignment.get("layers", [])
    if layers:
        centred = [layer.get("centred_cosine") for layer in layers if layer.get("centred_cosine") is not None]
        if centred:
            console.print(
                f"mean centred cosine student↔teacher over {len(centred)} layers: {sum(centred) / len(centred):.3f}"
            )
    console.print("stage times: " + ", ".join(f"{k.split(' ', 1)[1]} {v:.0f} s" for k, v in times.items()))
    console.print(f"total {total / 60:.1f} min")
    console.print(
        f"report: {root / 'eval' / 'report.md'}  plots: {root / 'eval'}/*.png, {root / 'diagnose' / 'alignment.png'}"
    )
    console.print(f"checkpoint: {joint_run / 'final'}")
    example = root / "data" / "test-context-qa" / "audio"
    clip = next(iter(sorted(example.glob("*.wav"))), example / "CLIP.wav")
    console.print("try it:")
    console.print(
        f"  .venv/bin/aura generate --model {joint_run / 'final'} --audio {clip} --prompt 'Transcribe the audio.'"
    )
    console.print(f"  .venv/bin/aura serve --model {joint_run / 'final'} --port 8000")
