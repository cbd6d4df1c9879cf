"""hibari: Kokoro-82M's American English voice `af_heart`, distilled into a 7.9-MB ONNX model.

A native English speaker's timbre and prosody, read from hibari's own English lexicon and tagger (no
espeak), at about 100x realtime on one core: the cheapest natural voice available offline here. Only
`heart` ships inside the `hibari-tts` package (its other voices download on first use, which this
project cannot rely on), so it is a training voice with no held-out partner, like piper's `joe`; the
pitch, formant and channel augmentation of `aura.data.augment` spreads it over speakers.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import numpy as np
import soxr

from aura.audio.features import SAMPLE_RATE
from aura.data.engines.base import Engine, Settings, SynthError

SPEED = (0.85, 1.15)
INSTALL = "pip install hibari-tts"


@functools.cache
def _model(voice: str):  # noqa: ANN202 - hibari is imported lazily
    try:
        from hibari import Hibari
        from hibari.voices import voice_path
    except ImportError as err:
        raise SynthError(f"hibari needs `{INSTALL}` ({err}).") from err
    try:
        voice_path(voice, download_missing=False)
    except (ValueError, FileNotFoundError) as err:
        raise SynthError(f"hibari has no voice '{voice}' here ({err}); use heart.") from err
    return Hibari(voice=voice, threads=1)  # one onnxruntime thread: synthesis workers share the cores


class HibariEngine(Engine):
    name = "hibari"
    voices = {"train": ("heart",), "heldout": ()}
    install = INSTALL

    def check(self, voices: Sequence[str]) -> None:
        for voice in voices:
            if voice not in self.voices["train"]:
                raise SynthError(f"hibari has no voice '{voice}' here; use heart.")
            _model(voice)

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        voice = rng.choice(voices)
        # the seed fixes hibari's noise excitation, so a clip is reproducible from the manifest
        return voice, {"speed": round(rng.uniform(*SPEED), 3), "seed": rng.randrange(2**31)}

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        model = _model(voice)
        wave = model(text, speed=float(settings["speed"]), seed=int(settings["seed"]))
        if wave.size == 0:
            raise SynthError(f"hibari produced no audio for {text[:60]!r}")
        return soxr.resample(wave.astype(np.float32), model.sample_rate, SAMPLE_RATE).astype(np.float32)


ENGINE = HibariEngine()
