"""AuRA: a Whisper encoder internalized into LoRA adapters of a causal LLM.

The public API is importable from the package root; it is loaded lazily so that `import aura` (and every
`aura` command) does not pay for torch and transformers until it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_audio": "aura.audio.features",
    "log_mel": "aura.audio.features",
    "AudioError": "aura.audio.features",
    "load_teacher": "aura.teacher.whisper",
    "Teacher": "aura.teacher.whisper",
    "load_llm": "aura.model.llm",
    "AuraConfig": "aura.config",
    "load_config": "aura.config",
    "AuraModel": "aura.infer.aura_model",
    "Example": "aura.data.manifest",
    "read_manifest": "aura.data.manifest",
}
__all__ = [
    "AudioError",
    "AuraConfig",
    "AuraModel",
    "Example",
    "Teacher",
    "__version__",
    "load_audio",
    "load_config",
    "load_llm",
    "load_teacher",
    "log_mel",
    "read_manifest",
]

if TYPE_CHECKING:
    from aura.audio.features import AudioError, load_audio, log_mel
    from aura.config import AuraConfig, load_config
    from aura.data.manifest import Example, read_manifest
    from aura.infer.aura_model import AuraModel
    from aura.model.llm import load_llm
    from aura.teacher.whisper import Teacher, load_teacher


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'aura' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
