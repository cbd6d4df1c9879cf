"""`aura data check | synth | import | pack`: speech manifests."""

from __future__ import annotations

from typing import Annotated

import typer

from aura.cli.app import app, console, err_console

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


_DataSynthEngines = Annotated[
    str,
    typer.Option(
        "--engines",
        help="Comma-separated synthesis engines, drawn per clip: any of espeak, piper, flite, festival, kokoro, hibari.",
    ),
]
_DataSynthAugment = Annotated[
    bool | None,
    typer.Option(
        "--augment/--no-augment",
        help="Speaker and channel augmentation per clip (default: on unless the only engine is espeak).",
    ),
]
_DataSynthVoices = Annotated[
    str | None,
    typer.Option(
        "--voices",
        help="Comma-separated voices, ENGINE:VOICE or a bare espeak voice, e.g. en-us+f4,flite:awb "
        "(overrides --voice-set).",
    ),
]
_DataSynthVoiceSet = Annotated[
    str,
    typer.Option("--voice-set", help="train, heldout, or auto (train voices for train, held-out otherwise)."),
]
_DataSynthMinWordCount = Annotated[
    int | None,
    typer.Option(
        "--min-word-count",
        min=1,
        help="asr tasks: keep WordNet sentences whose every word occurs at least this often in its glosses "
        "(default: everyday words, the filter dev/test sets are drawn with; 5 doubles the train sentences).",
    ),
]


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
    engines: _DataSynthEngines = "espeak",
    augment: _DataSynthAugment = None,
    voices: _DataSynthVoices = None,
    voice_set: _DataSynthVoiceSet = "auto",
    noise: float | None = typer.Option(None, "--noise", help="Add white noise at this SNR in dB."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes (default: all cores)."),
    min_word_count: _DataSynthMinWordCount = None,
) -> None:
    """Synthesise spoken examples (espeak-ng, piper, flite, festival, kokoro, hibari) into OUT/manifest.jsonl and OUT/audio/."""
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


_DataImportTranscripts = Annotated[
    str | None,
    typer.Option(
        "--transcripts",
        help="asterisk: the `name: text` transcript file, gzipped or not (default: Debian's "
        "asterisk-core-sounds-en core-sounds-en.txt.gz).",
    ),
]
_DataImportSrc = Annotated[
    str | None,
    typer.Argument(
        help="Source folder, CSV/TSV file, or save_to_disk folder; for asterisk the folder of the prompts' "
        "wav files (default: Debian's asterisk-core-sounds-en-wav)."
    ),
]
_DataImportMaxSeconds = Annotated[
    float | None,
    typer.Option("--max-seconds", min=0.1, help="Longest clip allowed (default: 30 s; asterisk: no limit)."),
]
_DataImportSkipBad = Annotated[
    bool, typer.Option("--skip-bad", help="Write bad items to OUT/rejects.jsonl instead of failing.")
]
_DataImportReference = Annotated[
    bool, typer.Option("--reference", help="Point at 16-kHz mono source files instead of copying them.")
]


def _import_asterisk(out: str, src: str | None, transcripts: str | None, max_seconds: float | None) -> None:
    """The Asterisk prompts as OUT/dev and OUT/test, each half reported with what it left out."""
    from aura.data import importers

    halves = importers.import_asterisk(
        out,
        audio_dir=src or importers.ASTERISK_AUDIO,
        transcripts=transcripts or importers.ASTERISK_TRANSCRIPTS,
        max_seconds=max_seconds or float("inf"),
    )
    for path, count, rejected in halves.values():
        note = f"; {rejected} item(s) left out, listed in {path.parent / 'rejects.jsonl'}" if rejected else ""
        console.print(f"wrote {count} example(s) to {path}{note}")


@data_app.command("import")
def data_import(
    source: str = typer.Option(
        ...,
        "--from",
        help="librispeech, csv, hf-disk, audio-folder (untranscribed: distillation only) or asterisk.",
    ),
    src: _DataImportSrc = None,
    out: str = typer.Option(..., "--out", help="Output folder (manifest.jsonl and audio/)."),
    max_seconds: _DataImportMaxSeconds = None,
    skip_bad: _DataImportSkipBad = False,
    reference: _DataImportReference = False,
    transcripts: _DataImportTranscripts = None,
) -> None:
    """Import a speech corpus into a manifest (audio copied, or resampled to 16 kHz when needed).

    `--from asterisk` writes OUT/dev/ and OUT/test/, a fixed half each: real speech for evaluation only.
    """
    from pathlib import Path

    from aura.data import importers
    from aura.data.manifest import DEFAULT_MAX_SECONDS, ManifestError

    try:
        if source == "asterisk":
            _import_asterisk(out, src, transcripts, max_seconds)
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


@data_app.command("pack")
def data_pack(
    manifest: str = typer.Argument(
        ..., help="Manifest of short clips (JSON lines), e.g. from `aura data synth`."
    ),
    out: str = typer.Option(..., "--out", help="Folder for the packed manifest.jsonl and its audio/."),
    min_seconds: float = typer.Option(10.0, "--min-seconds", help="Shortest window length drawn."),
    max_seconds: float = typer.Option(28.0, "--max-seconds", help="Longest window (at most 30 s)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the clip order, the window lengths and the pauses."),
    prefix: str = typer.Option(
        "pack", "--prefix", help="Start of the windows' ids, so packs of several manifests can be joined."
    ),
) -> None:
    """Join short clips into long windows for distillation: the teacher pays per 30-s window, so one pass
    yields the targets of every clip in it."""
    from aura.data.manifest import ManifestError
    from aura.data.pack import pack_manifest

    try:
        path = pack_manifest(manifest, out, min_seconds, max_seconds, seed, prefix=prefix)
    except (ManifestError, FileNotFoundError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    console.print(f"{path}: packed {manifest}")
