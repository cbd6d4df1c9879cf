"""The `aura` command line. `app.py` holds the root typer app; each command group is a module that adds its
commands to it, imported here in the order `aura --help` lists them. `main` is the console-script entry
point that pyproject names (`aura = "aura.cli:main"`); `python -m aura.cli` runs the same."""

# isort: off
from aura.cli import run  # noqa: F401  (each of these registers its commands)
from aura.cli import training  # noqa: F401
from aura.cli import evaluation  # noqa: F401
from aura.cli import data  # noqa: F401
from aura.cli import demo  # noqa: F401

# isort: on
from aura.cli.app import app, main

__all__ = ["app", "main"]
