"""The `aura` command. Thin wrappers: each command parses flags and calls the module that does the work."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="aura",
    help="AuRA: give a causal LLM ears by distilling a Whisper encoder into LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
