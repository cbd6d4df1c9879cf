"""The data phase: training clips in memory, the seeded order they are drawn in, and the typed batch the
loss step reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aura.audio.features import load_audio
from aura.data.manifest import AUDIO_TASK, Example, read_manifest
from aura.model.prompt import AUDIO_PLACEHOLDER
from aura.train.run_dir import TrainError


@dataclass
class Clip:
    """One training example with its decoded audio (kept in memory: clips are short)."""

    example: Example
    wave: np.ndarray
    mel: torch.Tensor | None = None


@dataclass
class TrainBatch:
    """One micro-batch as the loss step reads it: chat-templated prompts, their log-mels (one list of
    clips per prompt), the responses (joint stage only), the teacher targets per mapped layer (when
    distilling) and the transcript per clip (when the transcript loss is on)."""

    texts: list[str]
    mels: list[list[torch.Tensor]]
    responses: list[str] | None = None
    targets: list[torch.Tensor] | None = None
    transcripts: list[str | None] | None = None


def load_train_clips(path: str, max_seconds: float, role: str, need_response: bool) -> list[Clip]:
    """A manifest's clips decoded; `need_response` (the joint stage) refuses untranscribed ones."""
    examples = read_manifest(path, max_seconds=max_seconds)
    if not examples:
        raise TrainError(f"{path}: the {role} manifest has no examples.")
    bare = [ex.id for ex in examples if ex.response is None]
    if need_response and bare:
        raise TrainError(
            f"{path}: {len(bare)} {role} example(s) have no response (task '{AUDIO_TASK}', e.g. {bare[0]}); "
            "the joint stage learns to answer, so train on them with train.stage=distill, or give them one."
        )
    clips = []
    for ex in examples:
        if ex.prompt.count(AUDIO_PLACEHOLDER) > 1:
            raise TrainError(f"{path}: example {ex.id} has several {AUDIO_PLACEHOLDER} but one audio clip.")
        clips.append(Clip(ex, load_audio(ex.audio, max_seconds=max_seconds, name=f"{path}: {ex.id}")))
    return clips


def batch_indices(micro: int, n: int, batch: int, world: int, rank: int, seed: int, perms: dict) -> list[int]:
    """Indices of this rank's share of global micro-batch `micro` in a stream of seeded epoch permutations."""
    out = []
    for j in range(batch):
        p = micro * batch * world + rank * batch + j
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
            ).tolist()
        out.append(perms[epoch][p % n])
    return out
