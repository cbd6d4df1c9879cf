"""Festival with the HTS (statistical parametric) US English voice: smoother and more natural than flite.

Festival takes about half a CPU-second to start and load the voice, several times the cost of one
sentence, so each worker process keeps one `festival --pipe` running and sends it one command a clip.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Sequence
from multiprocessing import util
from pathlib import Path

import numpy as np

from aura.data.engines.base import Engine, Settings, SynthError, decode, require

VOICES = {"cmu_us_slt_arctic_hts": "voice_cmu_us_slt_arctic_hts"}
_READY = '"READY"'


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Session:
    """One running festival, fed commands on stdin; `(print "READY")` after each marks it done."""

    def __init__(self, exe: str) -> None:
        # stdbuf: festival block-buffers stdout on a pipe, which would hide the READY lines.
        self.proc = subprocess.Popen(
            [require("stdbuf", "apt-get install coreutils"), "-oL", exe, "--pipe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.voice = ""
        self.tmp = tempfile.TemporaryDirectory(prefix="aura-festival-")
        # A finalizer, not atexit: worker processes of a pool skip atexit but run these, so festival
        # is always told to quit and waited for.
        util.Finalize(self, self.close, exitpriority=10)

    def run(self, command: str) -> None:
        if self.proc.poll() is not None or self.proc.stdin is None or self.proc.stdout is None:
            raise SynthError(f"festival exited (code {self.proc.returncode})")
        self.proc.stdin.write(f"{command}\n(print {_READY})\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if line != _READY:
            raise SynthError(f"festival failed on {command[:80]!r}: {line or 'no answer'}")

    def say(self, text: str, voice: str) -> bytes:
        if voice != self.voice:
            self.run(f"({VOICES[voice]})")
            self.voice = voice
        target = Path(self.tmp.name) / "out.wav"
        target.unlink(missing_ok=True)
        self.run(f"(utt.save.wave (SynthText {_scheme_string(text)}) {_scheme_string(str(target))} 'riff)")
        return target.read_bytes()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)
        self.tmp.cleanup()


class Festival(Engine):
    name = "festival"
    voices = {"train": tuple(VOICES), "heldout": ()}
    install = "apt-get install --no-install-recommends festival festvox-us-slt-hts"

    def __init__(self) -> None:
        self._session: _Session | None = None

    def check(self, voices: Sequence[str]) -> None:
        require("festival", self.install)
        for voice in voices:
            if voice not in VOICES:
                raise SynthError(f"festival has no voice '{voice}' here; use {', '.join(VOICES)}.")
        if not any(Path("/usr/share/festival/voices/us").glob("cmu_us_slt_arctic_hts*")):
            raise SynthError(f"festival's HTS voice is not installed. Install it with `{self.install}`.")

    def draw(self, rng: random.Random, voices: Sequence[str]) -> tuple[str, dict[str, float | int]]:
        # The HTS voice ignores festival's Duration_Stretch: its variety comes from augmentation.
        return rng.choice(voices), {}

    def speak(self, text: str, voice: str, settings: Settings) -> np.ndarray:
        if self._session is None or self._session.proc.poll() is not None:
            self._session = _Session(require("festival", self.install))
        return decode(self._session.say(text, voice), f"festival output ({voice})")  # 32 kHz -> 16 kHz


ENGINE = Festival()
