"""`aura data pack`: join short clips into long windows for distillation.

The teacher encodes a full 30-s window whatever the clip's length, so a 3-s clip pays for ten times the
audio it yields; a window packed with several clips (short silences between them) gets the targets of all
of them from one teacher pass, and shows the student long audio with several speakers in it, as real
recordings have. Packing keeps the split: a packed train manifest holds only train clips.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from aura.audio.features import SAMPLE_RATE, load_audio
from aura.data.manifest import AUDIO_TASK, DEFAULT_MAX_SECONDS, Example, read_manifest, write_manifest

GAP_SECONDS = (0.2, 0.6)  # silence between packed clips: a pause, not a new recording


def plan_packs(
    durations: list[float], min_seconds: float, max_seconds: float, seed: int
) -> list[list[tuple[int, float]]]:
    """Groups of (clip index, silence before it) in a seeded shuffled order; each group's length is drawn
    from [min_seconds, max_seconds] so windows of every length are seen, and no group exceeds max_seconds
    (a clip longer than that stays alone)."""
    if not 0 < min_seconds <= max_seconds <= DEFAULT_MAX_SECONDS:
        raise ValueError(
            f"pack lengths must satisfy 0 < min ({min_seconds}) <= max ({max_seconds}) <= "
            f"{DEFAULT_MAX_SECONDS} s (one teacher window)."
        )
    rng = random.Random(seed)
    order = list(range(len(durations)))
    rng.shuffle(order)
    packs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    total, target = 0.0, rng.uniform(min_seconds, max_seconds)
    for i in order:
        gap = rng.uniform(*GAP_SECONDS) if current else 0.0
        if current and total + gap + durations[i] > target:
            packs.append(current)
            current, total, gap = [], 0.0, 0.0
            target = rng.uniform(min_seconds, max_seconds)
        current.append((i, gap))
        total += gap + durations[i]
    if current:
        packs.append(current)
    return packs


def pack_manifest(
    manifest: str | Path,
    out: str | Path,
    min_seconds: float = 10.0,
    max_seconds: float = 28.0,
    seed: int = 0,
    progress: bool = True,
    prefix: str = "pack",
) -> Path:
    """Write `out/manifest.jsonl` and `out/audio/pack-NNNNN.wav`: every clip of `manifest` exactly once.
    A pack's transcript and response join its clips' in order (a pack with an untranscribed clip is task
    `audio`, for distillation only); its prompt is its first clip's; ids are `prefix-NNNNN`, so packs of
    several manifests can be joined into one."""
    source = Path(manifest)
    examples = read_manifest(source)
    packs = plan_packs([e.duration for e in examples], min_seconds, max_seconds, seed)
    folder = Path(out)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, pack in enumerate(tqdm(packs, desc="pack", unit="window", disable=not progress)):
        parts = []
        for i, gap in pack:
            parts.append(np.zeros(round(gap * SAMPLE_RATE), np.float32))
            parts.append(load_audio(examples[i].audio))  # read_manifest resolved the path
        wave = np.concatenate(parts)
        name = f"audio/{prefix}-{n:05d}.wav"
        sf.write(folder / name, wave, SAMPLE_RATE, subtype="PCM_16")
        members = [examples[i] for i, _ in pack]
        transcripts = [e.transcript for e in members if e.transcript]
        responses = [e.response for e in members if e.response is not None]
        whole = len(responses) == len(members)  # else a window for distillation only
        rows.append(
            Example(
                id=f"{prefix}-{n:05d}",
                audio=name,
                task="asr" if whole else AUDIO_TASK,
                prompt=members[0].prompt,
                response=" ".join(responses) if whole else None,
                transcript=" ".join(transcripts) if len(transcripts) == len(members) else None,
                duration=round(len(wave) / SAMPLE_RATE, 3),
                parts=[e.id for e in members],
            )
        )
    path = folder / "manifest.jsonl"
    write_manifest(rows, path)
    return path
