"""espeak-ng: formant synthesis with many accents and voice variants; fast, robotic."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence

import numpy as np

from aura.data.engines.base import Engine, Settings, SynthError, decode, require

# "en" is espeak's British English; spelled "en-gb", espeak silently ignores a `+variant` suffix.
# The candidates: base accents x variants, the variants disjoint between the sets, so held-out clips come
# from voices never used in training.
BASE_VOICES = {
    "train": ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan"),
    "heldout": ("en", "en-gb-x-rp", "en-us"),
}
VARIANTS = {
    "train": ("", "m1", "m2", "m3", "m4", "m7", "m8", "f1", "f2", "f3", "f4", "f5"),
    "heldout": ("m5", "m6"),
}


def candidates(kind: str) -> tuple[str, ...]:
    """The candidate voices of a set ("train" or "heldout"): each base accent with each variant."""
    return tuple(f"{b}+{v}" if v else b for b in BASE_VOICES[kind] for v in VARIANTS[kind])


# Above this greedy Whisper tiny.en WER a training voice is not used (`python -m benchmarks.espeak_voices`:
# the same 6 test sentences per voice): speech a listener cannot follow teaches the reading nothing.
INTELLIGIBLE_WER = 0.3
# The 11 of the 84 training candidates at or below it (10-30 %); the other 73 measured 32-245 %, every
# female variant and every Scottish and gbclan voice among them. The held-out voices stay as they are,
# so the test splits keep their meaning (en+m6 17.5 %, en-us+m5/m6 27.5 %, en+m5 32.5 %, en-gb-x-rp+m5/m6
# 37.5 %).
TRAIN_VOICES = (
    "en-us", "en-us+m1", "en-us+m2", "en-us+m4", "en-us+m7", "en-us+m8",
    "en+m1", "en+m3", "en-029", "en-gb-x-rp+m8", "en-us-nyc+m7",
)  # fmt: skip
_ALIASES = {"en-gb": "en"}
RATE_WPM = (135, 175)
PITCH = (35, 65)


class Espeak(Engine):
    name = "espeak"
    voices = {
        "train": TRAIN_VOICES,
        "heldout": candidates("heldout"),
    }
    install = "apt-get install espeak-ng"

    def _exe(self) -> str:
        return require("espeak-ng", self.install)

    def _listed(self, kind: str) -> set[str]:
        """Names espeak-ng accepts for `--voices=<kind>`: language codes, voice names and file names."""
        listing = subprocess.run(
            [self._exe(), f"--voices={kind}"], capture_output=True, text=True, check=False
        ).stdout
        names: set[str] = set()
        for row in listing.splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 5:
                names.update({cols[1], cols[3], cols[4], cols[4].rsplit("/", 1)[-1]})
        return names

    def check(self, voices: Sequence[str]) -> None:
        """espeak-ng itself silently falls back to a default voice for unknown names, so check first."""
        bases, variants = self._listed("en"), self._listed("variant")
        for voice in voices:
            base, _, variant = voice.partition("+")
            if base not in bases or (variant and variant not in variants):
                raise SynthError(
                    f"espeak-ng has no voice '{voice}'. Use an English voice (e.g. en-us, en-gb, en-gb-x-rp) "
                    "optionally with a variant (+m1..m8, +f1..f5); `espeak-ng --voices=en` lists them."
                )

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        voice = rng.choice(voices)
        return voice, {"rate": rng.randint(*RATE_WPM), "pitch": rng.randint(*PITCH)}

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        base, plus, variant = voice.partition("+")
        spec = f"{_ALIASES.get(base, base)}{plus}{variant}"
        # Text goes in on stdin so nothing in it can be read as a command-line option.
        result = subprocess.run(
            [self._exe(), "-v", spec, "-s", str(settings["rate"]), "-p", str(settings["pitch"]), "--stdout"],
            input=text.encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            raise SynthError(
                f"espeak-ng failed for voice '{voice}': {result.stderr.decode(errors='replace').strip()}"
            )
        return decode(result.stdout, f"espeak-ng output ({voice})")  # 22.05 kHz -> 16 kHz


ENGINE = Espeak()
