"""The listening gap: the LM loss of the responses with each clip's own audio against another clip's audio.
Alignment says the student's states look like Whisper's; only this gap says the LLM reads them. Training logs it
on the dev set and `aura diagnose` reports it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aura.model.student import AuraStudent

# response token ranges (1-based, inclusive; None = to the end) of the listening gap by position
POSITION_BINS: tuple[tuple[int, int | None], ...] = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 8), (9, None))


@torch.no_grad()
def listening(
    student: AuraStudent,
    prompts: Sequence[str],
    responses: Sequence[str],
    mels: Sequence[torch.Tensor],
    system_prompt: str | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """LM loss (nats per response token) with each clip's own audio vs. the audio of the clip half the set
    away. Equal losses mean the answers come from the prompt and the LLM's prior, not from the audio.

    `by_position` splits both losses by the response token's index (1 = the first answer token): a model
    that hears only the start of a clip has its gap at the first tokens and none later.
    """
    if len(prompts) < 2:
        raise ValueError("listening needs at least 2 clips (it swaps their audio).")
    texts = [student.render_prompt(prompt, system_prompt) for prompt in prompts]

    def token_losses(order: Sequence[int], desc: str) -> list[np.ndarray]:
        rows: list[np.ndarray] = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            idx = range(start, min(start + batch_size, len(texts)))
            batch = student.build_batch(
                [texts[i] for i in idx], [[mels[order[i]]] for i in idx], [responses[i] for i in idx]
            )
            rows += [row.float().numpy() for row in student.response_nll(batch)]
        return rows

    n = len(texts)
    own = token_losses(range(n), "listening, own audio")
    other = token_losses([(i + n // 2) % n for i in range(n)], "listening, swapped audio")
    by_position = []
    for first, last in POSITION_BINS:
        mine = np.concatenate([row[first - 1 : last] for row in own])
        theirs = np.concatenate([row[first - 1 : last] for row in other])
        if mine.size:
            label = str(first) if first == last else f"{first}+" if last is None else f"{first}-{last}"
            by_position.append(
                {
                    "tokens": label,
                    "count": int(mine.size),
                    "own_audio_lm_loss": float(mine.mean()),
                    "other_audio_lm_loss": float(theirs.mean()),
                    "gap": float(theirs.mean() - mine.mean()),
                }
            )
    own_mean, other_mean = float(np.concatenate(own).mean()), float(np.concatenate(other).mean())
    return {
        "clips": n,
        "own_audio_lm_loss": own_mean,
        "other_audio_lm_loss": other_mean,
        "gap": other_mean - own_mean,
        "by_position": by_position,
    }
