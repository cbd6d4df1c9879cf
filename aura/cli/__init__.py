"""The `aura` command line: `app.py` holds the typer app and its commands; `main` is the console-script entry
point that pyproject names (`aura = "aura.cli:main"`), `python -m aura.cli` runs the same."""

from aura.cli.app import main

__all__ = ["main"]
