"""`aura demo` and `aura bench`."""

from __future__ import annotations

import sys

import typer

from aura.cli.app import app


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
