"""espeak-ng: formant synthesis with many accents and voice variants; fast, robotic."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence

import numpy as np

from aura.data.engines.base import Engine, Settings, SynthError, decode, require

# "en" is espeak's British English; spelled "en-gb", espeak silently ignores a `+variant` suffix.
BASE_VOICES = {
    "train": ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan"),
    "heldout": ("en", "en-gb-x-rp", "en-us"),
}
# Variants are disjoint between the sets: held-out clips come from voices never used in training.
# Held-out variants are male ones that whisper-base transcribes well (measured greedy WER on 16 clips:
# en+m5 22 %, en-gb-x-rp+m6 22 %, en+m6 25 %; the female en+f4 47 %, en+f5 37 %), so a test score
# measures the model, not espeak's hardest voices; training also gets the hard ones.
VARIANTS = {
    "train": ("", "m1", "m2", "m3", "m4", "m7", "m8", "f1", "f2", "f3", "f4", "f5"),
    "heldout": ("m5", "m6"),
}
_ALIASES = {"en-gb": "en"}
RATE_WPM = (135, 175)
PITCH = (35, 65)


class Espeak(Engine):
    name = "espeak"
    voices = {
        kind: tuple(f"{v}+{var}" if var else v for v in BASE_VOICES[kind] for var in VARIANTS[kind])
        for kind in ("train", "heldout")
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
