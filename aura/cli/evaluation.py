"""`aura eval`, `diagnose`, `transcribe`: the systems compared, the alignment measured, the teacher's own
transcripts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from aura.cli.app import app, console, err_console

_EvalSystems = Annotated[
    str,
    typer.Option(
        "--systems",
        help="Comma-separated: aura, bridge, cascade, cascade-beam, cascade-fast (faster-whisper + llama.cpp), "
        "text, whisper (teacher WER), and NAME=RUN_DIR for more checkpoints.",
    ),
]
_EvalBridgeModel = Annotated[
    str | None, typer.Option("--bridge-model", help="Bridge baseline checkpoint (RUN_DIR).")
]
_EvalLimit = Annotated[
    int | None, typer.Option("--limit", min=1, help="Evaluate the first N examples of each manifest.")
]
_EvalLlm = Annotated[
    str | None, typer.Option("--llm", help="Base LLM for cascade/text (default: the checkpoint's).")
]
_EvalTeacher = Annotated[
    str | None, typer.Option("--teacher", help="Whisper for cascade (default: the checkpoint's).")
]
_EvalThroughputExamples = Annotated[
    int,
    typer.Option(
        "--throughput-examples", min=1, help="Examples timed at batch 1 and batch 8 for throughput."
    ),
]
_EvalRescore = Annotated[
    bool,
    typer.Option("--rescore", help="Rescore the earlier run in --out from its predictions (no generation)."),
]
_EvalDtype = Annotated[
    str,
    typer.Option(
        "--dtype", help="The checkpoints' dtype: float32, bfloat16 or float16 (baselines: float32)."
    ),
]


@app.command("eval")
def eval_(
    data: list[str] = typer.Option(
        ..., "--data", help="Manifest (JSONL) to evaluate on; repeat for several (e.g. asr and context-qa)."
    ),
    systems: _EvalSystems = "aura,cascade,bridge,text",
    out: str = typer.Option(..., "--out", help="Folder for report.json, report.md, predictions and plots."),
    model: str | None = typer.Option(None, "--model", help="AuRA checkpoint (RUN_DIR or RUN_DIR/final)."),
    bridge_model: _EvalBridgeModel = None,
    limit: _EvalLimit = None,
    llm: _EvalLlm = None,
    teacher: _EvalTeacher = None,
    beam_size: int = typer.Option(5, "--beam-size", min=1, help="Beam width of the cascade-beam system."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    throughput_examples: _EvalThroughputExamples = 16,
    rescore: _EvalRescore = False,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    dtype: _EvalDtype = "float32",
) -> None:
    """Compare AuRA with the cascade, bridge and text-ceiling baselines: accuracy, latency, plots."""
    from pathlib import Path

    from aura.eval.evaluate import rescore as rescore_run
    from aura.eval.evaluate import run_eval
    from aura.infer.decoding import parse_dtype

    report = (
        rescore_run(out, data)
        if rescore
        else run_eval(
            data,
            systems,
            out,
            model=model,
            bridge_model=bridge_model,
            dtype=parse_dtype(dtype),
            llm=llm,
            teacher=teacher,
            progress=not quiet,
            limit=limit,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            throughput_items=throughput_examples,
        )
    )
    sys.stdout.write((Path(out) / "report.md").read_text())
    failed = sum(s["failed"] for s in report["systems"].values())
    if failed:
        err_console.print(f"{failed} answer(s) failed; see the failures in {Path(out) / 'report.json'}.")
    console.print(f"report: {Path(out) / 'report.json'}, plots: {', '.join(report['plots'])}")


_DiagnoseCompareUntrained = Annotated[
    bool,
    typer.Option("--compare-untrained", help="Also measure the student before training (a second line)."),
]
_DiagnoseProbe = Annotated[
    bool, typer.Option("--probe/--no-probe", help="Decode the student's states with Whisper's decoder.")
]
_DiagnoseProbeData = Annotated[
    str | None,
    typer.Option(
        "--probe-data",
        help="Manifest for the decoder probe instead of --data, all of it: real recorded speech "
        "(`aura data import --from asterisk`, dev half) shows whether the distilled encoder hears people.",
    ),
]


@app.command()
def diagnose(
    model: str = typer.Option(..., "--model", help="AuRA run (RUN_DIR, or its final/ with heads beside it)."),
    data: str = typer.Option(..., "--data", help="Manifest (JSONL) of the clips to compare on."),
    out: str = typer.Option(..., "--out", help="Folder for alignment.json and alignment.png."),
    limit: int = typer.Option(64, "--limit", min=1, help="Use the first N clips."),
    compare_untrained: _DiagnoseCompareUntrained = False,
    probe: _DiagnoseProbe = True,
    probe_data: _DiagnoseProbeData = None,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Per-layer alignment of the student's audio states with the teacher's, and the decoder probe."""

    from aura.eval.diagnose import diagnose as run_diagnose

    result = run_diagnose(
        model,
        data,
        out,
        limit=limit,
        compare_untrained=compare_untrained,
        probe=probe,
        probe_data=probe_data,
        progress=not quiet,
    )
    _print_diagnosis(result, out)


def _print_diagnosis(result: dict, out: str) -> None:
    from pathlib import Path

    table = Table(title=f"alignment over {result['clips']} clips ({result['audio_tokens']} audio tokens)")
    keys = [k for k in result["layers"][0] if k not in ("student", "teacher")]
    for column in ["student", "teacher", *keys]:
        table.add_column(column)
    for row in result["layers"]:
        table.add_row(str(row["student"]), str(row["teacher"]), *(f"{row[k]:.3f}" for k in keys))
    console.print(table)
    probe_result = result.get("probe", {})
    if "student_wer" in probe_result:
        console.print(
            f"decoder probe ({probe_result['clips']} clips of {probe_result['data']}): student WER {probe_result['student_wer']:.1%}, "
            f"teacher same input {probe_result['teacher_pooled_wer']:.1%}, teacher {probe_result['teacher_wer']:.1%}; "
            f"loss of the reference {probe_result['student_loss']:.2f} against {probe_result['teacher_pooled_loss']:.2f} "
            "nats/token from the teacher's same input"
        )
    elif probe_result:
        console.print(f"decoder probe skipped: {probe_result['skipped']}")
    looks = result["attention"]
    line = (
        f"attention ({looks['clips']} clips): the response puts {looks['audio']:.1%} of its attention on the "
        f"audio ({looks['audio_tokens']:.0f} tokens)"
    )
    if "transcript" in looks:
        line += (
            f"; the base LLM puts {looks['transcript']:.1%} on the transcript written in its place "
            f"({looks['transcript_tokens']:.0f} tokens)"
        )
    console.print(line)
    heard = result["listening"]
    console.print(
        f"listening ({heard['clips']} clips): LM loss {heard['own_audio_lm_loss']:.3f} with each clip's own "
        f"audio vs {heard['other_audio_lm_loss']:.3f} with another clip's (gap {heard['gap']:.3f} nats/token)"
    )
    by_token = ", ".join(f"{row['tokens']}: {row['gap']:.2f}" for row in heard["by_position"])
    console.print(f"listening gap by answer token: {by_token}")
    if "note" in result:
        console.print(result["note"])
    console.print(f"wrote {Path(out) / 'alignment.json'} and {Path(out) / 'alignment.png'}")


@app.command()
def transcribe(
    files: list[str] = typer.Argument(..., help="Audio files (wav/flac/mp3/ogg) to transcribe."),
    teacher: str = typer.Option(
        "whisper-tiny.en", "--teacher", help="Whisper registry name or Hugging Face Whisper folder."
    ),
    json_lines: bool = typer.Option(False, "--json", help="Print JSON lines {file, text} instead of text."),
    beam_size: int = typer.Option(1, "--beam-size", min=1, help="1 = greedy; more = beam search."),
) -> None:
    """Transcribe English speech with a Whisper teacher, one transcript per line, in the files' order."""
    import json

    from aura.audio.features import load_audio
    from aura.teacher.whisper import load_teacher

    waves = [load_audio(path) for path in files]  # bad files fail before the model is loaded
    texts = load_teacher(teacher).transcribe(waves, beam_size=beam_size)
    for path, text in zip(files, texts, strict=True):
        sys.stdout.write((json.dumps({"file": path, "text": text}) if json_lines else text) + "\n")
