"""Teacher targets computed once per clip and kept on disk.

A Whisper pass costs 0.3-0.9 s per clip on this CPU, more than a student step's share, so every clip's
teacher states are computed once: on the padded 30-s window (what Whisper was trained on), cut to the
clip's real frames and mean-pooled by k to the student's token rate. All N+1 layers are stored, so a
different layer map reuses the cache. The key is (audio content hash, teacher name, pooling): the same
audio under another file name hits the cache, a different teacher or k does not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aura.audio.features import encoder_frames, log_mel_batch
from aura.audio.frames import pool_frames


def save_states(states: torch.Tensor, path: Path) -> None:
    """Write one clip's cached states; atomic, so concurrent ranks never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"states": states.contiguous()}, str(tmp))
    os.replace(tmp, path)


def load_states(path: Path) -> torch.Tensor:
    return load_file(str(path))["states"]


class TeacherCache:
    """`get(wave)` -> `(N+1, tokens, d)` pooled teacher states, computed by `fill` on first use."""

    def __init__(self, root: str | Path, teacher_name: str, k: int, teacher: Any | None = None) -> None:
        self.root, self.teacher_name, self.k, self.teacher = Path(root), teacher_name, k, teacher
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, wave: np.ndarray) -> str:
        audio = hashlib.sha256(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).hexdigest()
        return hashlib.sha256(f"{audio}|{self.teacher_name}|mean-pool-k{self.k}".encode()).hexdigest()

    def path(self, wave: np.ndarray) -> Path:
        key = self.key(wave)
        return self.root / key[:2] / f"{key}.safetensors"

    def missing(self, waves: Sequence[np.ndarray]) -> list[int]:
        return [i for i, w in enumerate(waves) if not self.path(w).is_file()]

    @torch.no_grad()
    def fill(self, waves: Sequence[np.ndarray], batch_size: int = 8, progress: Any | None = None) -> int:
        """Compute and store the clips not cached yet; returns how many were computed."""
        todo = self.missing(waves)
        if todo and self.teacher is None:
            raise RuntimeError(
                f"{len(todo)} clips are not in the teacher cache {self.root} and no teacher is loaded."
            )
        for start in range(0, len(todo), batch_size):
            chunk = [waves[i] for i in todo[start : start + batch_size]]
            mel = log_mel_batch(chunk, n_mels=self.teacher.n_mels, pad_to_30s=True)
            layers = self.teacher.encode_mel(mel)
            for b, wave in enumerate(chunk):
                frames = encoder_frames(len(wave))
                pooled = torch.stack([pool_frames(h[b, :frames].float(), self.k) for h in layers])
                save_states(pooled, self.path(wave))
            if progress is not None:
                progress.update(len(chunk))
        return len(todo)

    def get(self, wave: np.ndarray) -> torch.Tensor:
        path = self.path(wave)
        if not path.is_file():
            raise KeyError(f"clip not in the teacher cache {self.root}; call fill() first.")
        return load_states(path)

    def statistics(self, waves: Sequence[np.ndarray], layers: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Per-layer mean, std (per dimension) and mean L2 norm of the cached targets over `waves`."""
        total = sq = norm = None
        count = 0
        for wave in waves:
            states = self.get(wave)[list(layers)].double()  # (L, T, d)
            s, q, n = states.sum(1), states.pow(2).sum(1), states.norm(dim=-1).sum(1)
            total, sq, norm = (s, q, n) if total is None else (total + s, sq + q, norm + n)
            count += states.shape[1]
        mean = total / count
        std = (sq / count - mean.pow(2)).clamp(min=0).sqrt()
        return mean.float(), std.float(), (norm / count).float()
