"""SpecAugment on the student's input only: distillation becomes masked prediction.

The teacher's targets were computed from the clean audio, so a student that sees mel bands and time
spans blanked out must infer what the teacher heard from the rest of the clip (as in data2vec's masked
prediction) instead of copying cues that only synthetic voices carry. The policy is fixed: two
frequency masks of up to `FREQ_WIDTH` mel bins, and one time mask of up to `TIME_WIDTH` mel frames per
second of audio, filled with the clip's mean (where a standardised spectrogram's zero would be).
"""

from __future__ import annotations

import torch

FREQ_MASKS, FREQ_WIDTH = 2, 20  # of 80 mel bins
TIME_WIDTH = 20  # mel frames (0.2 s) per mask
FRAMES_PER_TIME_MASK = 100  # one time mask per second of audio


def spec_augment(mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A masked copy of one clip's log-mel `(n_mels, frames)`; `mel` itself is left as it was."""
    out = mel.clone()
    n_mels, frames = out.shape
    fill = out.mean()
    for _ in range(FREQ_MASKS):
        start, width = _span(n_mels, FREQ_WIDTH, generator)
        out[start : start + width] = fill
    for _ in range(max(1, frames // FRAMES_PER_TIME_MASK)):
        start, width = _span(frames, TIME_WIDTH, generator)
        out[:, start : start + width] = fill
    return out


def _span(length: int, max_width: int, generator: torch.Generator) -> tuple[int, int]:
    """A uniform width in [0, max_width] (capped by `length`) at a uniform start that keeps it inside."""
    width = int(torch.randint(0, min(max_width, length) + 1, (), generator=generator))
    start = int(torch.randint(0, length - width + 1, (), generator=generator))
    return start, width
