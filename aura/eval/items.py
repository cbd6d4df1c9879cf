"""The example sets an evaluation reads: manifest examples with their decoded audio."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aura.audio.features import SAMPLE_RATE, load_audio
from aura.data.manifest import Example, read_manifest
from aura.model.prompt import with_transcript

ASR_TASK = "asr"


class EvalError(ValueError):
    """A request `aura eval` cannot run (unknown system, missing checkpoint); the message says what to do."""


@dataclass(frozen=True)
class EvalItem:
    """One manifest example with its clip decoded: what every system receives."""

    id: str
    task: str
    prompt: str
    response: str
    transcript: str | None
    wave: np.ndarray = field(repr=False)
    distractors: tuple[str, ...] | None = None

    @property
    def duration(self) -> float:
        return self.wave.size / SAMPLE_RATE

    @classmethod
    def from_example(cls, example: Example) -> EvalItem:
        return cls(
            id=example.id,
            task=example.task,
            prompt=example.prompt,
            response=example.response,
            transcript=example.transcript,
            wave=load_audio(example.audio, name=example.id),
            distractors=None if example.distractors is None else tuple(example.distractors),
        )

    def text_prompt(self, transcript: str) -> str:
        return with_transcript(self.prompt, transcript)


def load_items(manifests: str | Path | Sequence[str | Path], limit: int | None = None) -> list[EvalItem]:
    """Read one or more manifests (bad lines fail with their line numbers) and decode their clips.

    Several manifests (e.g. the `asr` and `context-qa` test splits) make one evaluation set; `limit`
    keeps the first N examples of each, so every task stays represented. Clips of any length are
    evaluated: inference reads long audio in 30-s windows (the 30-s limit is for training data).
    """
    paths = [manifests] if isinstance(manifests, str | Path) else list(manifests)
    if not paths:
        raise EvalError("no manifest given; pass --data MANIFEST (repeat it for several).")
    examples = []
    for path in paths:
        examples += read_manifest(path, max_seconds=float("inf"))[:limit]
    seen: dict[str, int] = Counter(ex.id for ex in examples)
    repeated = sorted(ex_id for ex_id, count in seen.items() if count > 1)
    if repeated:
        raise EvalError(f"example id(s) {repeated[:5]} appear in more than one manifest; ids must be unique.")
    bare = [ex.id for ex in examples if ex.response is None]
    if bare:
        raise EvalError(
            f"{len(bare)} example(s) have no response to score against (untranscribed audio, e.g. {bare[0]}); "
            "evaluate on a manifest with responses."
        )
    return [EvalItem.from_example(ex) for ex in examples]
