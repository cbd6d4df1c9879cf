"""Layer-wise distillation: the layer map, one projection head per mapped layer, losses and metrics.

Each mapped student state (at audio positions only) goes through its head (RMSNorm + Linear to the
teacher width) and is compared with the teacher state of the same audio, mean-pooled by k to the
student's token rate. Raw cosine flatters: Whisper states share a large common direction, so always
predicting the mean target already scores 0.5-0.9. Hence the metrics beside it: **centred cosine**
(the per-layer training-set mean target removed from both sides) and **linear CKA** (student states
vs targets over the batch's audio tokens). Targets may be standardised per dimension before the loss;
the heads carry the statistics (`target_mean`, `target_std`, `target_norm`) so predictions can be mapped
back to the teacher's scale (what `aura diagnose` needs to feed a Whisper decoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from aura.config import ConfigError

HEADS_FILE = "heads.safetensors"


def layer_map(spec: str | list[list[int]], student_blocks: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Pairs (student hidden_states index, teacher hidden_states index).

    "identity": i <-> i for i = 0..min(N, T); "strided": teacher t <-> student round(t * N / T), for
    t = 0..T (spreads the teacher over N blocks when N != T); or an explicit list of pairs.
    """
    if spec == "identity":
        return [(i, i) for i in range(min(student_blocks, teacher_layers) + 1)]
    if spec == "strided":
        return [(round(t * student_blocks / teacher_layers), t) for t in range(teacher_layers + 1)]
    if isinstance(spec, list):
        pairs = []
        for pair in spec:
            if len(pair) != 2:
                raise ConfigError(f"model.layer_map: each entry must be [student, teacher], got {pair}.")
            s, t = int(pair[0]), int(pair[1])
            if not (0 <= s <= student_blocks and 0 <= t <= teacher_layers):
                raise ConfigError(
                    f"model.layer_map: pair [{s}, {t}] is out of range (student 0..{student_blocks}, "
                    f"teacher 0..{teacher_layers})."
                )
            pairs.append((s, t))
        if not pairs:
            raise ConfigError("model.layer_map: the list of pairs is empty.")
        return pairs
    raise ConfigError(
        f"model.layer_map: {spec!r} is not 'identity', 'strided' or a list of [student, teacher] pairs."
    )


class DistillHeads(nn.Module):
    """One RMSNorm + Linear head per mapped layer, plus the per-layer target statistics."""

    def __init__(self, pairs: list[tuple[int, int]], student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.RMSNorm(student_width, eps=1e-6), nn.Linear(student_width, teacher_width))
            for _ in self.pairs
        )
        n = len(self.pairs)
        self.register_buffer("target_mean", torch.zeros(n, teacher_width))
        self.register_buffer("target_std", torch.ones(n, teacher_width))
        self.register_buffer("target_norm", torch.ones(n))
        self.register_buffer("standardize", torch.tensor(False))

    @property
    def student_layers(self) -> list[int]:
        return sorted({s for s, _ in self.pairs})

    @property
    def teacher_layers(self) -> list[int]:
        return [t for _, t in self.pairs]

    def set_statistics(
        self, mean: torch.Tensor, std: torch.Tensor, norm: torch.Tensor, standardize: bool
    ) -> None:
        """Per-layer statistics of the (pooled) teacher targets over the training set, `(n_pairs, d)`."""
        self.target_mean.copy_(mean)
        self.target_std.copy_(std.clamp(min=1e-4))
        self.target_norm.copy_(norm)
        self.standardize.fill_(standardize)

    def loss_space(self, index: int, target: torch.Tensor) -> torch.Tensor:
        """The target in the space the head predicts (standardised when configured)."""
        if bool(self.standardize):
            return (target - self.target_mean[index]) / self.target_std[index]
        return target

    def to_teacher_space(self, index: int, prediction: torch.Tensor) -> torch.Tensor:
        """A head output mapped back to the teacher's own coordinates."""
        if bool(self.standardize):
            return prediction * self.target_std[index] + self.target_mean[index]
        return prediction

    def decoder_input(self, index: int, prediction: torch.Tensor) -> torch.Tensor:
        """A head output as a Whisper decoder should read it: in teacher coordinates, each frame rescaled to
        the mean target norm (cosine training leaves the magnitude free)."""
        raw = self.to_teacher_space(index, prediction).float()
        return raw * (self.target_norm[index] / raw.norm(dim=-1, keepdim=True).clamp(min=1e-6))

    def forward(self, index: int, state: torch.Tensor) -> torch.Tensor:
        return self.heads[index](state)

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """`heads.safetensors`: head weights + target statistics; layer pairs in the metadata.

        `state_dict` gives the weights whole when the live ones are sharded (FSDP)."""
        weights = self.state_dict() if state_dict is None else state_dict
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in weights.items()}
        tensors["standardize"] = self.standardize.to(torch.float32).reshape(1)
        save_file(tensors, str(path), metadata={"pairs": json.dumps(self.pairs)})

    @classmethod
    def load(cls, path: str | Path) -> DistillHeads:
        with safe_open(str(path), framework="pt") as handle:
            pairs = [tuple(p) for p in json.loads(handle.metadata()["pairs"])]
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        weight = tensors["heads.0.1.weight"]
        heads = cls(pairs, weight.shape[1], weight.shape[0])
        tensors["standardize"] = tensors["standardize"].reshape(()).bool()
        heads.load_state_dict(tensors)
        return heads


class TranscriptReader:
    """The transcript loss: the teacher's frozen Whisper decoder writes each clip's transcript while reading
    the student's states mapped to the teacher's last layer. A training-only aux head like the projection
    heads; it measures during training what `aura diagnose`'s decoder probe measures after it."""

    def __init__(self, teacher: Any, heads: DistillHeads) -> None:
        last = [j for j, (_, t) in enumerate(heads.pairs) if t == teacher.num_layers]
        if not last:
            raise ConfigError(
                f"distill.decoder_weight needs the teacher's last layer ({teacher.num_layers}) in model.layer_map "
                f"(pairs: {heads.pairs})."
            )
        self.teacher, self.heads, self.index = teacher, heads, last[0]
        self.student_layer = heads.pairs[self.index][0]

    def __call__(
        self, states: torch.Tensor, tokens: list[int], transcripts: list[str | None]
    ) -> torch.Tensor | None:
        """Mean loss over the clips that have a transcript; `states` are the audio tokens of the student's
        mapped layer for all clips in batch order, `tokens` their count per clip, `transcripts` each
        clip's text. None when no clip has a transcript. The decoder reads one state per audio token:
        attention over k copies of a key is attention over the key, so this is the 50-Hz reading at 1/k of
        the cross-attention cost (`aura.distill.probe` reads the same way)."""
        prediction = self.heads.decoder_input(self.index, self.heads(self.index, states))
        losses = [
            self.teacher.transcript_loss(clip, text)
            for clip, text in zip(prediction.split(tokens), transcripts, strict=True)
            if text
        ]
        return torch.stack(losses).mean() if losses else None


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(prediction.float(), target.float(), dim=-1).mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two sets of representations of the same n items, `(n, dx)` and `(n, dy)`."""
    x = x.float() - x.float().mean(0, keepdim=True)
    y = y.float() - y.float().mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()).clamp(min=1e-12)


def distill_terms(
    heads: DistillHeads,
    states: dict[int, torch.Tensor],
    audio_mask: torch.Tensor,
    targets: list[torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cosine loss over mapped layers and per-layer metrics, computed on audio positions only.

    `states[s]` is `(B, T, d_student)`; `targets[j]` is the j-th mapped teacher layer for all clips of
    the batch concatenated in batch order, `(n_audio_tokens, d_teacher)`. Text and padding positions
    are dropped by `audio_mask` before anything else touches them.
    """
    losses, metrics = [], {}
    for j, (s, t) in enumerate(heads.pairs):
        student = states[s][audio_mask]
        target = targets[j].to(student.device)
        if student.shape[0] != target.shape[0]:
            raise ValueError(
                f"{student.shape[0]} student audio tokens but {target.shape[0]} teacher targets."
            )
        prediction = heads(j, student)
        losses.append(cosine_loss(prediction, heads.loss_space(j, target)))
        with torch.no_grad():
            raw = heads.to_teacher_space(j, prediction.detach()).float()
            target = target.float()
            mean = heads.target_mean[j]
            metrics[f"cos_{t}"] = F.cosine_similarity(raw, target, dim=-1).mean()
            metrics[f"ccos_{t}"] = F.cosine_similarity(raw - mean, target - mean, dim=-1).mean()
            metrics[f"cka_{t}"] = linear_cka(student.detach(), target)
    loss = torch.stack(losses).mean()
    return loss, metrics
