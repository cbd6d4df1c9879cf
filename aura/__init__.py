"""AuRA: a Whisper encoder internalized into LoRA adapters of a causal LLM.

The public API is importable from the package root; it is loaded lazily so that `import aura` (and every
`aura` command) does not pay for torch and transformers until it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_audio": "aura.features",
    "log_mel": "aura.features",
    "AudioError": "aura.features",
    "load_teacher": "aura.teacher",
    "Teacher": "aura.teacher",
    "load_llm": "aura.llm",
    "AuraConfig": "aura.config",
    "load_config": "aura.config",
    "AuraModel": "aura.infer",
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
    from aura.config import AuraConfig, load_config
    from aura.data.manifest import Example, read_manifest
    from aura.features import AudioError, load_audio, log_mel
    from aura.infer import AuraModel
    from aura.llm import load_llm
    from aura.teacher import Teacher, load_teacher


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'aura' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
