"""`aura data synth`: speak planned examples with one or several engines, augment them, in parallel.

Each clip draws its engine (uniformly among the requested ones), the engine's voice and settings,
loudness and lead-in silence, and, when augmenting, its speaker and channel augmentation
(`aura.data.augment`). Evaluation splits use voices training never hears (`voice_set="heldout"`, the
default for dev/test): held-out espeak variants, a held-out flite speaker, and the flite voice of a
speaker training hears only through festival; an engine without a held-out voice is left out of
dev/test. All randomness is drawn up front from the seed, so the output does not depend on the number
of worker processes.

Augmented sets render in two passes: first every clip's clean speech, then each clip's augmentation,
because babble noise is made of other clips of the set.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from aura.audio.features import SAMPLE_RATE
from aura.data import augment as augmentation
from aura.data.augment import Augmentation, add_noise
from aura.data.engines import ENGINES, SynthError, get_engine, resolve_voice_set
from aura.data.manifest import DEFAULT_MAX_SECONDS, Example, write_manifest
from aura.data.tasks import Plan, plan_examples

DEFAULT_ENGINES = ("espeak",)
PEAK = (0.3, 0.9)
# Silence added before and after the speech, in seconds: espeak starts speaking at the first sample,
# and Whisper tends to drop a first word that has no lead-in.
PAD_SECONDS = (0.15, 0.5)
CLEAN_DIR = ".clean"  # first-pass clips of an augmented set; removed when the set is done

__all__ = ["SynthError", "add_noise", "synthesize", "voices_for", "voice_pools"]


def voices_for(voice_set: str, split: str, engine: str = "espeak") -> list[str]:
    """All voices of `engine` in a voice set; `auto` means train voices for train, held-out otherwise."""
    return get_engine(engine).voices_for(voice_set, split)


def voice_pools(
    engines: Sequence[str], split: str, voice_set: str = "auto", voices: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """The voices each engine may use: `voices` (`ENGINE:VOICE`, or a bare espeak voice) or the voice set.

    An engine with no voice in the set (piper and festival have no held-out voice) is left out.
    """
    resolve_voice_set(voice_set, split)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(
            f"unknown synthesis engine(s) {', '.join(unknown) or '(none)'}; use any of {', '.join(ENGINES)}"
        )
    chosen: dict[str, list[str]] = {}
    for spec in voices or ():
        engine, _, voice = spec.rpartition(":") if ":" in spec else ("espeak", "", spec)
        if engine not in engines:
            raise ValueError(
                f"voice '{spec}' is for engine '{engine}', which is not in --engines {','.join(engines)}"
            )
        chosen.setdefault(engine, []).append(voice)
    pools = {e: chosen[e] for e in engines if e in chosen} if chosen else {}
    if not chosen:
        pools = {e: get_engine(e).voices_for(voice_set, split) for e in engines}
        pools = {e: v for e, v in pools.items() if v}
    if not pools:
        raise SynthError(
            f"none of the engines {', '.join(engines)} has a voice in the '{resolve_voice_set(voice_set, split)}' "
            "voice set; add espeak or flite (they have held-out voices), or pass --voice-set train."
        )
    return pools


@dataclass(frozen=True)
class Job:
    """One clip to render (picklable for the worker pool)."""

    text: str
    engine: str
    voice: str
    settings: tuple[tuple[str, float | int], ...]  # the engine's own per-clip settings
    peak: float
    pad: tuple[float, float]
    snr_db: float | None
    noise_seed: int
    path: str
    augment: Augmentation | None = None
    clean: str = ""  # where the first pass writes the un-augmented clip (augmented sets only)
    babble: tuple[str, ...] = ()  # clean clips the babble noise is made of


def _speak(job: Job) -> np.ndarray:
    """The engine's speech at the clip's loudness, with its lead-in and trailing silence."""
    wave = get_engine(job.engine).speak(job.text, job.voice, dict(job.settings))
    wave = wave * (job.peak / max(float(np.abs(wave).max()), 1e-6))
    return np.pad(wave, [round(job.pad[0] * SAMPLE_RATE), round(job.pad[1] * SAMPLE_RATE)])


def _finish(job: Job, wave: np.ndarray) -> float:
    """Add the fixed-SNR white noise if asked, write a 16-kHz mono PCM wav; return its seconds."""
    if job.snr_db is not None:
        wave = add_noise(wave, job.snr_db, np.random.default_rng(job.noise_seed))
        wave = wave * min(1.0, 0.99 / float(np.abs(wave).max()))
    sf.write(job.path, wave, SAMPLE_RATE, subtype="PCM_16")
    return wave.size / SAMPLE_RATE


def render(job: Job) -> float:
    """First pass: speak one clip; an un-augmented clip is then finished, an augmented one kept clean."""
    wave = _speak(job)
    if job.augment is None:
        return _finish(job, wave)
    sf.write(job.clean, wave, SAMPLE_RATE, subtype="PCM_16")
    return wave.size / SAMPLE_RATE


def render_augmented(job: Job) -> float:
    """Second pass: augment a clean clip (babble from other clean clips) and finish it."""
    if job.augment is None:
        raise ValueError(f"{job.path}: no augmentation to apply")
    clean, _ = sf.read(job.clean, dtype="float32")
    babble = [sf.read(path, dtype="float32")[0] for path in job.babble]
    return _finish(job, augmentation.apply(clean, job.augment, babble))


def _parallel(
    fn: Callable[[Job], float], jobs: list[Job], pool: multiprocessing.pool.Pool | None, bar: tqdm
) -> Iterator[float]:
    results = map(fn, jobs) if pool is None else pool.imap(fn, jobs, chunksize=4)
    for seconds in results:
        bar.update()
        yield seconds


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
    engines: Sequence[str] = DEFAULT_ENGINES,
    augment: bool | None = None,
) -> Path:
    """Write `out/manifest.jsonl` and `out/audio/*.wav` with `n` examples of `task`; return the manifest path.

    `augment=None` augments unless the only engine is espeak, so plain espeak sets stay as they were.
    """
    engines = list(dict.fromkeys(engines))
    pools = voice_pools(engines, split, voice_set, voices)
    for name, pool_voices in pools.items():
        get_engine(name).check(pool_voices)
    if augment is None:
        augment = engines != ["espeak"]
    plans = plan_examples(task, n, split, seed, min_word_count)
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    ids = [f"{task}-{split}-s{seed}-{i:06d}" for i in range(n)]
    jobs = _draw_jobs(plans, ids, pools, out, f"{task}/{split}/{seed}", noise_snr, augment)
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    durations = _render_all(jobs, out / CLEAN_DIR, augment, workers, f"synth {task}/{split}", progress)
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
                engine=job.engine,
                voice=job.voice,
                augment=job.augment,
                entity=plan.entity,
                distractors=list(plan.distractors) if plan.task in ("context-qa", "who-did") else None,
            )
        )
    return write_manifest(examples, out / "manifest.jsonl")


def _draw_jobs(
    plans: Sequence[Plan],
    ids: list[str],
    pools: dict[str, list[str]],
    out: Path,
    stream: str,
    noise_snr: float | None,
    augment: bool,
) -> list[Job]:
    """Each clip's engine, voice, level, padding, noise and augmentation, drawn from seeded streams (`stream`
    names them: task/split/seed), so the same arguments always render the same clips."""
    rng = random.Random(f"voices/{stream}")
    clean_dir = out / CLEAN_DIR
    names = list(pools)
    jobs = []
    for i, (plan, clip_id) in enumerate(zip(plans, ids, strict=True)):
        engine = rng.choice(names) if len(names) > 1 else names[0]  # one engine: espeak's old draws
        voice, settings = get_engine(engine).draw(rng, pools[engine])
        peak = round(rng.uniform(*PEAK), 3)
        pad = (round(rng.uniform(*PAD_SECONDS), 3), round(rng.uniform(*PAD_SECONDS), 3))
        noise_seed = rng.getrandbits(32)
        aug = None
        if augment:
            aug_rng = random.Random(f"augment/{stream}/{i}")
            aug = augmentation.draw_augmentation(aug_rng, ids, own=clip_id)
        jobs.append(
            Job(
                text=plan.text,
                engine=engine,
                voice=voice,
                settings=tuple(settings.items()),
                peak=peak,
                pad=pad,
                snr_db=noise_snr,
                noise_seed=noise_seed,
                path=str(out / "audio" / f"{clip_id}.wav"),
                augment=aug,
                clean=str(clean_dir / f"{clip_id}.wav") if aug else "",
                babble=tuple(str(clean_dir / f"{b}.wav") for b in (aug.babble or ())) if aug else (),
            )
        )
    return jobs


def _render_all(
    jobs: list[Job], clean_dir: Path, augment: bool, workers: int, desc: str, progress: bool
) -> list[float]:
    """Render every clip (then augment it, from its clean render); returns the clips' seconds."""
    if augment:
        clean_dir.mkdir(exist_ok=True)
    n = len(jobs)
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        with tqdm(total=n, desc=desc, unit="clip", disable=not progress) as bar:
            durations = list(_parallel(render, jobs, pool, bar))
        if augment:
            with tqdm(total=n, desc=f"{desc} augment", unit="clip", disable=not progress) as bar:
                durations = list(_parallel(render_augmented, jobs, pool, bar))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        shutil.rmtree(clean_dir, ignore_errors=True)
    return durations
