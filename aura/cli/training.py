"""`aura train`."""

from __future__ import annotations

import sys

import typer

from aura.cli.app import app, console


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
