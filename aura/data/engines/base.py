"""What every synthesis engine provides, so `aura.data.synth` can mix engines it knows nothing about.

An engine is one module in this package exposing an `Engine`: its voices (split into the ones training
may use and the held-out ones only dev/test hear), a seeded draw of its own per-clip settings, and
`speak`, which returns 16-kHz mono float32 audio. Removing an engine is deleting its module and its line
in `aura.data.engines.ENGINES`.
"""

from __future__ import annotations

import random
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from aura.audio.features import AudioError, load_audio

VOICE_SETS = ("auto", "train", "heldout")
Settings = Mapping[str, float | int | str]


class SynthError(OSError):
    """A synthesis engine is missing, or refused a voice or a text."""


def resolve_voice_set(voice_set: str, split: str) -> str:
    """`auto` means the training voices for the train split and the held-out ones for dev and test."""
    if voice_set not in VOICE_SETS:
        raise ValueError(f"unknown voice set '{voice_set}'; use one of {', '.join(VOICE_SETS)}")
    if voice_set == "auto":
        return "train" if split == "train" else "heldout"
    return voice_set


def require(program: str, install: str) -> str:
    """The path of `program`, or a `SynthError` that says how to install it."""
    exe = shutil.which(program)
    if not exe:
        raise SynthError(f"{program} is not installed. Install it with `{install}`.")
    return exe


def decode(data: bytes, label: str) -> np.ndarray:
    """An engine's wav bytes as 16-kHz mono float32 (resampled from the engine's own rate)."""
    try:
        return load_audio(data, name=label)
    except AudioError as err:
        raise SynthError(str(err)) from err


class Engine(ABC):
    """One synthesis engine. Subclasses set `name`, `voices` and `install`, and implement the rest."""

    name: str
    voices: Mapping[str, tuple[str, ...]]  # "train" and "heldout": disjoint
    install: str  # how to get the engine, for error messages

    def voices_for(self, voice_set: str, split: str) -> list[str]:
        """The voices of a voice set (`auto`: train voices for train, held-out ones otherwise)."""
        return list(self.voices[resolve_voice_set(voice_set, split)])

    @abstractmethod
    def check(self, voices: Sequence[str]) -> None:
        """Fail fast, naming what is missing: the engine itself, or one of `voices`."""

    @abstractmethod
    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        """Pick a voice and this engine's own per-clip settings (rate, pitch, ...) from `rng`."""

    @abstractmethod
    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        """Say `text`; 16-kHz mono float32."""
