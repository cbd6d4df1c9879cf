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
