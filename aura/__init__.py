"""AuRA: a Whisper encoder internalized into LoRA adapters of a causal LLM."""

from __future__ import annotations

__version__ = "0.1.0"
