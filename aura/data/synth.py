"""`aura data synth`: speak planned examples with espeak-ng, in parallel, into a manifest folder.

Voices, variants, rate, pitch and loudness vary per clip; evaluation splits use voice variants that
training never hears (`voice_set="heldout"`, the default for dev/test), so a score measures hearing,
not memorised voices. All randomness is drawn up front from the seed, so output is reproducible
whatever the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from aura.data.manifest import DEFAULT_MAX_SECONDS, Example, write_manifest
from aura.data.tasks import plan_examples
from aura.features import SAMPLE_RATE, AudioError, load_audio

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
VOICE_SETS = ("auto", "train", "heldout")
RATE_WPM = (135, 175)
PITCH = (35, 65)
PEAK = (0.3, 0.9)
# Silence added before and after the speech, in seconds: espeak starts speaking at the first sample,
# and Whisper tends to drop a first word that has no lead-in.
PAD_SECONDS = (0.15, 0.5)


class SynthError(OSError):
    """espeak-ng is missing or refused a voice or text."""


def voices_for(voice_set: str, split: str) -> list[str]:
    """All `voice+variant` specs of a voice set; `auto` means train voices for train, held-out otherwise."""
    if voice_set not in VOICE_SETS:
        raise ValueError(f"unknown voice set '{voice_set}'; use one of {', '.join(VOICE_SETS)}")
    if voice_set == "auto":
        voice_set = "train" if split == "train" else "heldout"
    return [f"{v}+{var}" if var else v for v in BASE_VOICES[voice_set] for var in VARIANTS[voice_set]]


@dataclass(frozen=True)
class Job:
    """One clip to render (picklable for the worker pool)."""

    text: str
    voice: str
    rate: int
    pitch: int
    peak: float
    pad: tuple[float, float]
    snr_db: float | None
    noise_seed: int
    path: str


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SynthError("espeak-ng is not installed. Install it with `apt-get install espeak-ng`.")
    return exe


def _speak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    base, plus, variant = voice.partition("+")
    spec = f"{_ALIASES.get(base, base)}{plus}{variant}"
    # Text goes in on stdin so nothing in it can be read as a command-line option.
    result = subprocess.run(
        [_espeak(), "-v", spec, "-s", str(rate), "-p", str(pitch), "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise SynthError(
            f"espeak-ng failed for voice '{voice}': {result.stderr.decode(errors='replace').strip()}"
        )
    try:
        return load_audio(result.stdout, name=f"espeak-ng output ({voice})")  # 22.05 kHz -> 16 kHz
    except AudioError as err:
        raise SynthError(str(err)) from err


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` relative to the clip's speech power (silence excluded from the power)."""
    voiced = wave[np.abs(wave) > 0.02 * np.abs(wave).max()]
    power = float(np.mean((voiced if voiced.size else wave) ** 2))
    noise = rng.standard_normal(wave.size).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return wave + noise


def render(job: Job) -> float:
    """Speak one clip, set its loudness, add noise, write a 16-kHz mono PCM wav; return seconds."""
    wave = _speak(job.text, job.voice, job.rate, job.pitch)
    wave = wave * (job.peak / max(float(np.abs(wave).max()), 1e-6))
    wave = np.pad(wave, [round(job.pad[0] * SAMPLE_RATE), round(job.pad[1] * SAMPLE_RATE)])
    if job.snr_db is not None:
        wave = add_noise(wave, job.snr_db, np.random.default_rng(job.noise_seed))
        wave = wave * min(1.0, 0.99 / float(np.abs(wave).max()))
    sf.write(job.path, wave, SAMPLE_RATE, subtype="PCM_16")
    return wave.size / SAMPLE_RATE


def _espeak_list(kind: str) -> set[str]:
    """Names espeak-ng accepts for `--voices=<kind>`: language codes, voice names and file names."""
    listing = subprocess.run(
        [_espeak(), f"--voices={kind}"], capture_output=True, text=True, check=False
    ).stdout
    names: set[str] = set()
    for row in listing.splitlines()[1:]:
        cols = row.split()
        if len(cols) >= 5:
            names.update({cols[1], cols[3], cols[4], cols[4].rsplit("/", 1)[-1]})
    return names


def check_voices(voices: Sequence[str]) -> None:
    """Fail fast, naming the voice: espeak-ng itself silently falls back to a default for unknown names."""
    bases, variants = _espeak_list("en"), _espeak_list("variant")
    for voice in voices:
        base, _, variant = voice.partition("+")
        if base not in bases or (variant and variant not in variants):
            raise SynthError(
                f"espeak-ng has no voice '{voice}'. Use an English voice (e.g. en-us, en-gb, en-gb-x-rp) "
                "optionally with a variant (+m1..m8, +f1..f5); `espeak-ng --voices=en` lists them."
            )


def synthesize(
    task: str,
    n: int,
    out: str | Path,
    *,
    split: str = "train",
    seed: int = 0,
    voices: Sequence[str] | None = None,
    voice_set: str = "auto",
    noise_snr: float | None = None,
    workers: int | None = None,
    progress: bool = True,
    min_word_count: int | None = None,
) -> Path:
    """Write `out/manifest.jsonl` and `out/audio/*.wav` with `n` examples of `task`; return the manifest path."""
    plans = plan_examples(task, n, split, seed, min_word_count)
    pool_voices = list(voices) if voices else voices_for(voice_set, split)
    check_voices(pool_voices)
    rng = random.Random(f"voices/{task}/{split}/{seed}")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    ids = [f"{task}-{split}-s{seed}-{i:06d}" for i in range(n)]
    jobs = [
        Job(
            text=plan.text,
            voice=rng.choice(pool_voices),
            rate=rng.randint(*RATE_WPM),
            pitch=rng.randint(*PITCH),
            peak=round(rng.uniform(*PEAK), 3),
            pad=(round(rng.uniform(*PAD_SECONDS), 3), round(rng.uniform(*PAD_SECONDS), 3)),
            snr_db=noise_snr,
            noise_seed=rng.getrandbits(32),
            path=str(out / "audio" / f"{clip_id}.wav"),
        )
        for plan, clip_id in zip(plans, ids, strict=True)
    ]
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    bar = tqdm(total=n, desc=f"synth {task}/{split}", unit="clip", disable=not progress)
    if workers == 1:
        durations = []
        for job in jobs:
            durations.append(render(job))
            bar.update()
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            durations = []
            for seconds in pool.imap(render, jobs, chunksize=4):
                durations.append(seconds)
                bar.update()
    bar.close()
    examples = []
    for clip_id, plan, job, seconds in zip(ids, plans, jobs, durations, strict=True):
        if seconds > DEFAULT_MAX_SECONDS:
            raise SynthError(
                f"{clip_id}: spoken text gives a {seconds:.1f} s clip, over {DEFAULT_MAX_SECONDS:g} s"
            )
        examples.append(
            Example(
                id=clip_id,
                audio=f"audio/{clip_id}.wav",
                task=plan.task,
                prompt=plan.prompt,
                response=plan.response,
                transcript=plan.transcript,
                duration=round(seconds, 3),
                voice=job.voice,
                entity=plan.entity,
                distractors=list(plan.distractors) if plan.task in ("context-qa", "who-did") else None,
            )
        )
    return write_manifest(examples, out / "manifest.jsonl")
