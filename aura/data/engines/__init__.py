"""Synthesis engines `aura data synth` can mix, one module each (see `aura.data.engines.base`)."""

from __future__ import annotations

from aura.data.engines import espeak, festival, flite, hibari, kokoro, piper
from aura.data.engines.base import VOICE_SETS, Engine, SynthError, resolve_voice_set

ENGINES: dict[str, Engine] = {
    m.ENGINE.name: m.ENGINE for m in (espeak, piper, flite, festival, kokoro, hibari)
}


def get_engine(name: str) -> Engine:
    """The engine called `name`, or a clear error listing the known ones."""
    if name not in ENGINES:
        raise ValueError(f"unknown synthesis engine '{name}'; use any of {', '.join(ENGINES)}")
    return ENGINES[name]


__all__ = ["ENGINES", "VOICE_SETS", "Engine", "SynthError", "get_engine", "resolve_voice_set"]
