"""flite (CMU Flite): small unit-selection and diphone voices, clearer than espeak, still synthetic."""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aura.data.engines.base import Engine, Settings, SynthError, decode, require

DURATION_STRETCH = (0.85, 1.2)


class Flite(Engine):
    name = "flite"
    # slt is also festival's HTS voice (the same CMU ARCTIC speaker): flite/slt is the held-out
    # engine-voice pair whose speaker training does hear, through another engine; rms is a whole
    # speaker training never hears.
    voices = {"train": ("awb", "kal16"), "heldout": ("rms", "slt")}
    install = "apt-get install flite"

    def _exe(self) -> str:
        return require("flite", self.install)

    def check(self, voices: Sequence[str]) -> None:
        listing = subprocess.run([self._exe(), "-lv"], capture_output=True, text=True, check=False).stdout
        known = set(listing.partition(":")[2].split())
        for voice in voices:
            if voice not in known:
                raise SynthError(f"flite has no voice '{voice}'; it has {', '.join(sorted(known))}.")

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        voice = rng.choice(voices)
        return voice, {"duration_stretch": round(rng.uniform(*DURATION_STRETCH), 3)}

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        # flite needs a seekable output file; the text goes in a file so nothing in it reads as an option.
        with tempfile.TemporaryDirectory(prefix="aura-flite-") as tmp:
            source, target = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
            source.write_text(text, encoding="utf-8")
            stretch = f"duration_stretch={settings['duration_stretch']}"
            result = subprocess.run(
                [self._exe(), "-voice", voice, "--setf", stretch, "-f", str(source), "-o", str(target)],
                capture_output=True,
                check=False,
            )
            if result.returncode != 0 or not target.is_file():
                raise SynthError(
                    f"flite failed for voice '{voice}': {result.stderr.decode(errors='replace').strip()}"
                )
            return decode(target.read_bytes(), f"flite output ({voice})")


ENGINE = Flite()
