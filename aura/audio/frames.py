"""The two frame rates AuRA works at: Whisper's encoder (50 Hz) and the student's audio tokens (k encoder
frames each). Teacher targets are pooled down to the token rate, and the teacher's decoder reads the tokens at it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pool_frames(states: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of each run of k frames `(F, d)` -> `(ceil(F / k), d)`; the last run averages only real frames."""
    frames, width = states.shape
    tokens = math.ceil(frames / k)
    padded = F.pad(states, (0, 0, 0, tokens * k - frames)).reshape(tokens, k, width).sum(1)
    counts = torch.full((tokens, 1), float(k), dtype=states.dtype)
    counts[-1] = frames - (tokens - 1) * k
    return padded / counts
