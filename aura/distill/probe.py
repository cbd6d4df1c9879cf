"""The decoder probe: do the student's distilled audio states carry the words?

The student's last mapped states, through their head, rescaled to the teacher's mean state norm (cosine
training leaves the magnitude free), are fed to the teacher's own Whisper decoder (greedy, KV cache), one
state per audio token: cross-attention over k copies of a state is attention over the state, so this
reads what the states repeated back to 50 Hz would, at 1/k of the cost (only a clip's last token, when
its frames are not a multiple of k, weighs a little more: on 68 real prompts of 2-5 s the teacher's
same-input WER moves from 37.5 % to 38.2 %). Only the clip's own frames are given: the teacher's padding
frames would carry the teacher's view of the clip into the student's result. The teacher's WER under the same
conditions (its pooled states, same frames, same length cap) and its ordinary padded-window WER are
reported beside the student's, and so is the decoder's teacher-forced loss on the reference (nats per
token): near 100 % WER nearly every word written is wrong and WER stops ranking students, while the loss
still says how far each is from writing the words. It is a distillation metric, so training tracks it (`data.probe`, on real
speech above all: an encoder distilled on synthetic voices can score well on them and fail on people)
and `aura diagnose` reports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aura.audio.features import SAMPLE_RATE, WINDOW_SAMPLES, load_audio
from aura.audio.frames import pool_frames
from aura.config import AuraConfig
from aura.data.manifest import read_manifest
from aura.distill.heads import DistillHeads
from aura.metrics import error_rates
from aura.model.student import AuraStudent

PROBE_SLACK_TOKENS = 2  # decoder length cap: reference length in Whisper tokens + this


@dataclass
class Clip:
    id: str
    prompt: str
    response: str | None
    reference: str | None
    wave: np.ndarray


def load_clips(path: str | Path, limit: int | None = None) -> list[Clip]:
    """A manifest's first `limit` examples (all if None) with their audio, those over one 30-s window left
    out (Whisper's decoder reads one window); an asr response is its own reference transcript."""
    window = WINDOW_SAMPLES / SAMPLE_RATE
    examples = [ex for ex in read_manifest(path, max_seconds=math.inf) if ex.duration <= window][:limit]
    return [
        Clip(
            ex.id,
            ex.prompt,
            ex.response,
            ex.transcript or (ex.response if ex.task == "asr" else None),
            load_audio(ex.audio, name=f"{path}: {ex.id}"),
        )
        for ex in examples
    ]


@torch.no_grad()
def student_states(
    student: AuraStudent,
    clips: Sequence[Clip],
    layers: Sequence[int],
    config: AuraConfig,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[int, list[torch.Tensor]]:
    """`{layer: [(tokens_i, d) per clip]}` at the audio positions, with the prompt context used in training."""
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    blocks = max(max(layers), 1)
    starts = range(0, len(clips), batch_size)
    for start in tqdm(starts, desc="student states", unit="batch", disable=not progress, leave=False):
        chunk = clips[start : start + batch_size]
        texts = [student.render_prompt(c.prompt, config.data.system_prompt) for c in chunk]
        mels = [[student.audio_features(c.wave)] for c in chunk]
        batch = student.build_batch(texts, mels, stop_after_audio=True)
        states = student.hidden_states(batch, layers, blocks=blocks)
        for layer in layers:
            for i in range(len(chunk)):
                out[layer].append(states[layer][i][batch.audio_mask[i]].float().cpu())
    return out


def teacher_states(
    teacher: Any, clips: Sequence[Clip], layers: Sequence[int], k: int
) -> dict[int, list[torch.Tensor]]:
    """`{layer: [(tokens_i, d) per clip]}`: padded-window states cut to the clip and mean-pooled by k."""
    per_clip = teacher.hidden_states([c.wave for c in clips])
    return {layer: [pool_frames(states[layer], k) for states in per_clip] for layer in layers}


def probe_decode(teacher: Any, states: torch.Tensor, clip: Clip) -> str:
    """Whisper's decoder reading k-pooled states `(tokens, d)` of `clip`, greedy, capped at the reference
    length (the probe's rules, shared by its calibration)."""
    cap = len(teacher.tokenizer(clip.reference, add_special_tokens=False)["input_ids"]) + PROBE_SLACK_TOKENS
    return teacher.decode(encoder_states=states[None], max_new_tokens=cap)[0]


@torch.no_grad()
def probe_loss(teacher: Any, states: Sequence[torch.Tensor], clips: Sequence[Clip]) -> float:
    """Mean teacher-forced loss (nats per token) of Whisper's decoder writing each clip's reference while
    reading its k-pooled states: the transcript loss of training, on the probe's clips."""
    return float(
        torch.stack(
            [teacher.transcript_loss(s, c.reference or "") for s, c in zip(states, clips, strict=True)]
        ).mean()
    )


def decoder_probe(
    teacher: Any,
    heads: DistillHeads,
    index: int,
    clips: Sequence[Clip],
    student: list[torch.Tensor],
    pooled_teacher: list[torch.Tensor],
    progress: bool = False,
) -> dict[str, Any]:
    """WER of the Whisper decoder reading the student's states vs the teacher's own (see module docstring)."""
    rows, read, pooled = [], [], []
    usable = [i for i, c in enumerate(clips) if c.reference]
    full = teacher.transcribe([clips[i].wave for i in usable]) if usable else []
    for n, i in enumerate(tqdm(usable, desc="decoder probe", disable=not progress, leave=False)):
        clip = clips[i]
        with torch.no_grad():
            prediction = heads.decoder_input(index, heads(index, student[i]))
        read.append(prediction)
        pooled.append(pooled_teacher[i])
        rows.append(
            {
                "id": clip.id,
                "reference": clip.reference,
                "student": probe_decode(teacher, prediction, clip),
                "teacher_pooled": probe_decode(teacher, pooled_teacher[i], clip),
                "teacher": full[n],
            }
        )
    if not rows:
        return {"skipped": "no clip has a reference transcript"}
    refs = [r["reference"] for r in rows]
    return {
        "teacher_layer": heads.pairs[index][1],
        "clips": len(rows),
        "length_cap": f"reference tokens + {PROBE_SLACK_TOKENS}",
        "student_wer": error_rates(refs, [r["student"] for r in rows]).wer,
        "teacher_pooled_wer": error_rates(refs, [r["teacher_pooled"] for r in rows]).wer,
        "teacher_wer": error_rates(refs, [r["teacher"] for r in rows]).wer,
        "student_loss": probe_loss(teacher, read, [clips[i] for i in usable]),
        "teacher_pooled_loss": probe_loss(teacher, pooled, [clips[i] for i in usable]),
        "examples": rows,
    }


class ProbeTracker:
    """The decoder probe during training (`data.probe`): the clips, the teacher's pooled states and its
    same-input WER and loss are computed once; each `measure` reads the student's current states."""

    def __init__(self, teacher: Any, heads: DistillHeads, clips: Sequence[Clip], k: int) -> None:
        reaching = [j for j, (_, t) in enumerate(heads.pairs) if t == teacher.num_layers]
        if not reaching:
            raise ValueError(
                f"data.probe: the layer map does not reach the teacher's last layer ({teacher.num_layers}), "
                "which is what Whisper's decoder reads; map it (model.layer_map) or unset data.probe."
            )
        self.clips = [c for c in clips if c.reference]
        if not self.clips:
            raise ValueError("data.probe: no example has a transcript to score the probe against.")
        self.teacher, self.heads, self.index = teacher, heads, reaching[-1]
        self.layer = heads.pairs[self.index][0]
        self.references = [c.reference or "" for c in self.clips]
        pooled = teacher_states(teacher, self.clips, [teacher.num_layers], k)[teacher.num_layers]
        self.teacher_wer = error_rates(
            self.references, [probe_decode(teacher, s, c) for s, c in zip(pooled, self.clips, strict=True)]
        ).wer
        self.teacher_loss = probe_loss(teacher, pooled, self.clips)

    @torch.no_grad()
    def measure(self, student: AuraStudent, config: AuraConfig) -> dict[str, float]:
        """The student's probe WER and loss, `{"wer": ..., "loss": ...}`."""
        states = student_states(student, self.clips, [self.layer], config)[self.layer]
        read = [self.heads.decoder_input(self.index, self.heads(self.index, s)) for s in states]
        hypotheses = [probe_decode(self.teacher, s, c) for s, c in zip(read, self.clips, strict=True)]
        return {
            "wer": error_rates(self.references, hypotheses).wer,
            "loss": probe_loss(self.teacher, read, self.clips),
        }
