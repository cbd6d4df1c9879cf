"""The `aura demo` summary as tables: printed with rich and written as `demo.md` and `demo.json`.

Every number comes from the summary `aura.eval.demo.summarise` gathers, each table row from one place, so the
terminal and the report cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LABELS = {
    "aura": "aura (shipped: audio embedded in the LLM)",
    "bridge": "bridge (shipped: Whisper encoder → projector → LLM)",
    "cascade": "cascade (Whisper → transcript → LLM)",
    "text": "text ceiling (LLM reads the gold transcript)",
    "whisper": "whisper (the teacher alone; its text arrives whole)",
}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, pattern: str = "{:.0f}") -> str:
    return "—" if value is None else pattern.format(value)


def _qa_table(summary: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    qa = summary["shipped"].get("synthetic context-qa", {})
    cascade_ttft = qa.get("cascade", {}).get("ttft_ms")
    rows = []
    for name in [n for n in ("aura", "bridge", "cascade", "text") if n in qa]:
        entry = qa[name]
        ttft = entry.get("ttft_ms")
        # the speed-up of the systems that hear; `text` reads the transcript, so it has none
        speedup = cascade_ttft / ttft if cascade_ttft and ttft and name in ("aura", "bridge") else None
        rows.append(
            [
                LABELS[name],
                _pct(entry.get("accuracy")),
                _pct(entry.get("f1")),
                _num(ttft),
                _num(speedup, "{:.2f}×"),
            ]
        )
    rows.append(["chance (one of the offered candidates)", _pct(summary["qa_chance"]), "—", "—", "—"])
    n_qa = next(iter(qa.values()), {}).get("n", 0)
    return (
        f"Spoken questions: context-QA on {n_qa} fresh clips (held-out voices and entities)",
        ["system", "accuracy", "F1", "TTFT ms (median)", "TTFT speed-up vs cascade"],
        rows,
    )


def _asr_table(summary: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    asr, real = summary["shipped"].get("synthetic asr", {}), summary["shipped"].get("real asr", {})
    n_asr, n_real = next(iter(asr.values()), {}).get("n", 0), next(iter(real.values()), {}).get("n", 0)
    rows = [
        [
            LABELS[name],
            _pct(asr[name].get("wer")),
            _pct(real.get(name, {}).get("wer")),
            _num(asr[name].get("ttft_ms")),
        ]
        for name in ("whisper", "aura", "bridge")
        if name in asr
    ]
    return (
        f"Transcription: WER on {n_asr} fresh synthetic clips and {n_real} real recordings",
        ["system", "WER synthetic", "WER real speech", "TTFT ms (median, synthetic)"],
        rows,
    )


def _adapt_table(summary: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    adapt = summary["adaptation"]
    before, after = adapt["before"], adapt["after"]
    rows = [
        [
            "dev LM loss, nats per answer token (lower: better)",
            *(_num(x.get("dev_lm_loss"), "{:.3f}") for x in (before, after)),
        ],
        [
            "listening gap: LM loss with another clip's audio minus with its own (higher: hears more)",
            *(_num(x.get("dev_listening_gap"), "{:.3f}") for x in (before, after)),
        ],
    ]
    if before.get("wer") is not None or after.get("wer") is not None:
        rows.append(["WER of the model's transcription", _pct(before.get("wer")), _pct(after.get("wer"))])
    start = "the untrained student" if adapt["from_scratch"] else "the shipped checkpoint"
    return (
        f"Training: {adapt['steps']} steps from {start} on {adapt['train_clips']} fresh noisy clips "
        f"({adapt['noise_snr_db']:g} dB SNR), measured on {adapt['dev_clips']} held-out noisy clips",
        ["measure", "before", "after"],
        rows,
    )


def demo_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the demo prints and writes, built once for both."""
    return [_qa_table(summary), _asr_table(summary), _adapt_table(summary)]


def _alignment_line(summary: dict[str, Any]) -> str:
    align = summary["alignment"]
    probe = align["probe"]
    line = (
        f"Alignment of the shipped checkpoint on {align['clips']} clips: mean CKA with Whisper's states "
        f"{_num(align['mean_cka'], '{:.3f}')}, mean centred cosine {_num(align['mean_centred_cosine'], '{:.3f}')}, "
        f"listening gap {align['listening_gap']:.3f} nats"
    )
    if "student_wer" in probe:
        line += (
            f"; Whisper's decoder reading AuRA's states: WER {_pct(probe['student_wer'])} "
            f"(the teacher's own states: {_pct(probe['teacher_pooled_wer'])}, on {probe['data']})"
        )
    return line + "."


def write_summary(summary: dict[str, Any], root: Path) -> None:
    """`demo.json` (every number) and `demo.md` (the tables) in the demo folder."""
    (root / "demo.json").write_text(json.dumps(summary, indent=2))
    lines = ["# aura demo", "", summary["notes"], ""]
    for title, header, rows in demo_tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    lines += [
        _alignment_line(summary),
        "",
        "TTFT: time to the first answer text from the moment the clip is in memory, batch 1, on this machine. "
        "WER after Whisper's English normaliser. Accuracy: the reply contains the gold answer and no "
        "distractor the prompt offers.",
        "",
        "Plots: " + ", ".join(f"`{p}`" for p in summary["files"]["plots"]),
        "",
        f"Total {summary['total_seconds'] / 60:.1f} min; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items()),
    ]
    (root / "demo.md").write_text("\n".join(lines) + "\n")


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    for title, header, rows in demo_tables(summary):
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(header):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(_alignment_line(summary))
    console.print(summary["notes"])
    files = summary["files"]
    console.print(f"total {summary['total_seconds'] / 60:.1f} min; report: {summary['report']}")
    console.print("plots: " + ", ".join(files["plots"]))
    console.print("try it:")
    console.print(f"  .venv/bin/aura generate --model {summary['model']} --audio {files['example clip']}")
    console.print(f"  .venv/bin/aura serve --model {summary['model']} --port 8000")
