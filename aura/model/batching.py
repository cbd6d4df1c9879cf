"""Batching for the student: audio embeddings spliced into tokenised prompts, rows padded into one batch.

`AuraStudent.build_batch(texts, audio, responses=None)` -> `StudentBatch`: each `<audio>` in `texts[i]` is
replaced by the embeddings of the next clip in `audio[i]` (any number of clips, anywhere in the text).
Rows are right-padded; `mask (B, 1, T, T)` is additive (0 = attend): causal, bidirectional inside each
audio span if configured, padding masked; `positions` count real tokens only; `labels` are -100 except
response tokens (HF convention: the label at the token's own position).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from aura.audio.chunks import chunk_frames
from aura.config import ConfigError, ModelConfig

MAX_CHUNKS = 1 << 16  # more chunks than one clip can have: numbers clip * MAX_CHUNKS + chunk stay apart

# one row before padding: (embeddings (n, d), audio span number per position (0 = text), labels)
Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class StudentBatch:
    """A padded batch ready for the LLM (see the module docstring)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    lengths: list[int]
    audio_mask: torch.Tensor
    labels: torch.Tensor | None = None


def span_attention_mask(
    valid: torch.Tensor, spans: torch.Tensor, bidirectional: bool, dtype: torch.dtype
) -> torch.Tensor:
    """4-D additive mask: causal over real tokens, plus full attention inside each audio span.

    `spans` holds 0 for text/padding and a per-row span number (> 0) for audio positions. Padding rows
    may attend to themselves only, so no softmax row is empty.
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    allowed = causal[None] & valid[:, None, :]
    if bidirectional:
        allowed |= (spans[:, :, None] == spans[:, None, :]) & (spans[:, :, None] > 0)
    allowed |= torch.eye(length, dtype=torch.bool, device=valid.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def check_audio_attention(config: ModelConfig) -> None:
    """Chunk-causal attention needs AuRA's embedding layer and chunks of whole audio tokens."""
    if config.audio_attention != "chunk-causal":
        return
    if config.arch == "bridge":
        raise ConfigError(
            "model.audio_attention=chunk-causal reads audio chunk by chunk through AuRA's embedding layer; "
            "the bridge's Whisper encoder attends over the whole clip. Use model.arch=aura."
        )
    chunk_frames(config.audio_chunk_seconds, config.k)


def with_audio_attention(config: ModelConfig, kind: str) -> ModelConfig:
    """`config` with another `audio_attention` (a ConfigError names the choices and checks the chunks)."""
    from aura.config import AuraConfig

    checked = AuraConfig.from_dict({"model": {"audio_attention": kind}}, source="audio_attention").model
    config = dataclasses.replace(config, audio_attention=checked.audio_attention)
    check_audio_attention(config)
    return config


def chunk_tokens(config: ModelConfig) -> int | None:
    """Audio tokens per chunk under chunk-causal attention; None under the other attentions."""
    if config.audio_attention != "chunk-causal":
        return None
    return chunk_frames(config.audio_chunk_seconds, config.k) // config.k


def span_numbers(tokens: int, clip: int, chunk: int | None) -> torch.Tensor:
    """The mask's numbers for one clip's audio tokens: tokens sharing a number see each other both ways,
    so a clip has one number, or one per chunk of `chunk` tokens under chunk-causal attention."""
    numbers = torch.full((tokens,), clip + 1, dtype=torch.long)
    if chunk is None:
        return numbers
    return numbers * MAX_CHUNKS + torch.arange(tokens) // chunk


def splice_row(
    index: int,
    pieces: list[str],
    clips: Iterator[torch.Tensor],
    response_ids: list[int] | None,
    text_ids: Callable[[str], list[int]],
    embed_tokens: nn.Embedding,
    chunk: int | None = None,
) -> Row:
    """Prompt `index`'s row: its text pieces embedded as tokens, one clip's embeddings between each two
    pieces, then the response tokens (the only labelled positions)."""
    device = embed_tokens.weight.device
    parts, spans, labels = [], [], []
    for j, piece in enumerate(pieces):
        ids = text_ids(piece)
        if ids:
            parts.append(embed_tokens(torch.tensor(ids, device=device)))
            spans.append(torch.zeros(len(ids), dtype=torch.long))
            labels.append(torch.full((len(ids),), -100))
        if j < len(pieces) - 1:
            emb = next(clips).to(parts[0].dtype if parts else embed_tokens.weight.dtype)
            parts.append(emb)
            spans.append(span_numbers(emb.shape[0], j, chunk))
            labels.append(torch.full((emb.shape[0],), -100))
    if response_ids is not None:
        parts.append(embed_tokens(torch.tensor(response_ids, device=device)))
        spans.append(torch.zeros(len(response_ids), dtype=torch.long))
        labels.append(torch.tensor(response_ids))
    if not parts:
        raise ValueError(f"prompt {index} is empty.")
    return torch.cat(parts), torch.cat(spans), torch.cat(labels)


def pad_rows(rows: list[Row], bidirectional: bool, device: torch.device, labelled: bool) -> StudentBatch:
    """Right-pad the rows into one batch with its attention mask and positions."""
    length = max(r[0].shape[0] for r in rows)
    width = rows[0][0].shape[1]
    b = len(rows)
    embeds = torch.zeros(b, length, width, dtype=rows[0][0].dtype, device=device)
    span_ids = torch.zeros(b, length, dtype=torch.long)
    label_ids = torch.full((b, length), -100, dtype=torch.long)
    valid = torch.zeros(b, length, dtype=torch.bool)
    for i, (emb, spans_i, labels_i) in enumerate(rows):
        n = emb.shape[0]
        embeds[i, :n], span_ids[i, :n], label_ids[i, :n], valid[i, :n] = emb, spans_i, labels_i, True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    mask = span_attention_mask(valid, span_ids, bidirectional, embeds.dtype)
    return StudentBatch(
        embeds=embeds,
        mask=mask.to(device),
        positions=positions.to(device),
        valid=valid.to(device),
        lengths=[r[0].shape[0] for r in rows],
        audio_mask=(span_ids > 0).to(device),
        labels=label_ids.to(device) if labelled else None,
    )
