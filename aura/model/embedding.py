"""The audio embedding layer: AuRA's only new input path into the LLM.

log-mel (n_mels, 2F) -> Whisper-style conv stem (conv k3 s1, GELU, conv k3 s2, GELU) -> + positions
-> stack k consecutive 50-Hz frames -> LayerNorm -> Linear to the LLM width -> rescaled per token to
the RMS of the LLM's own token embeddings. The last step matters: the LLM's blocks were trained on
inputs of that scale, and an embedding 10x too large or small starts LoRA far from anything it knows.

The conv stem and position table start as copies of the teacher's (stem trainable, positions frozen),
so the first layer already speaks the teacher's layer-0 language; everything else is learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_FRAMES = 1500  # 30 s at 50 Hz, Whisper's position table length


class AudioEmbedding(nn.Module):
    """Maps one clip's unpadded log-mel `(n_mels, 2F)` to `(ceil(F / k), llm_width)` audio embeddings."""

    def __init__(
        self, n_mels: int, width: int, llm_width: int, k: int, target_rms: float, max_frames: int = MAX_FRAMES
    ) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k (frames stacked per audio token) must be >= 1, got {k}.")
        self.n_mels, self.width, self.llm_width, self.k = n_mels, width, llm_width, k
        self.conv1 = nn.Conv1d(n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        # frozen, but persistent so the inference checkpoint is self-contained (no teacher needed)
        self.register_buffer("positions", _sinusoids(max_frames, width))
        self.norm = nn.LayerNorm(k * width)
        self.proj = nn.Linear(k * width, llm_width)
        self.register_buffer("target_rms", torch.tensor(float(target_rms)))

    @property
    def max_frames(self) -> int:
        return int(self.positions.shape[0])

    def init_from_whisper(self, encoder: nn.Module) -> None:
        """Copy the conv stem and position table from a Whisper encoder whose shapes match."""
        if encoder.conv1.weight.shape != self.conv1.weight.shape:
            raise ValueError(
                f"teacher conv stem {tuple(encoder.conv1.weight.shape)} does not match the embedding's "
                f"{tuple(self.conv1.weight.shape)}; build the embedding with the teacher's width and n_mels."
            )
        with torch.no_grad():
            self.conv1.load_state_dict(encoder.conv1.state_dict())
            self.conv2.load_state_dict(encoder.conv2.state_dict())
            table = encoder.embed_positions.weight
            self.positions.copy_(table[: self.max_frames].to(self.positions.dtype))

    def frames(self, mel: torch.Tensor) -> torch.Tensor:
        """Conv stem + positions: `(B, n_mels, 2F)` -> `(B, F, width)` at 50 Hz (the teacher's layer 0).

        The log-mel arrives in float32 whatever the layer's dtype; it is cast to the weights' dtype here,
        so a layer loaded in bfloat16 runs as is (under autocast the cast is a no-op on float32 weights).
        """
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.max_frames:
            raise ValueError(
                f"audio of {x.shape[1]} frames exceeds the {self.max_frames}-frame (30 s) limit."
            )
        return x + self.positions[: x.shape[1]].to(x.dtype)

    def frames_between(
        self, mel: torch.Tensor, start: int, stop: int, clip_end: bool = False
    ) -> torch.Tensor:
        """Encoder frames [start, stop) `(stop - start, width)` of a clip whose log-mel `(n_mels, M)` is known
        up to frame M, equal to `frames` of the whole clip: what a stream computes chunk by chunk.

        Each encoder frame reads mel frames 2f - 2 to 2f + 2 through the two convolutions, so the mel frames
        just before `start` are carried in as context and `mel` must reach frame 2 * stop (or hold the whole
        clip, `clip_end`, whose last frames read the convolutions' zero padding as `frames` does).
        """
        low, high = max(0, 2 * start - 2), 2 * stop + 1
        if stop > self.max_frames:
            raise ValueError(f"audio of {stop} frames exceeds the {self.max_frames}-frame (30 s) limit.")
        if high > mel.shape[-1] and not clip_end:
            raise ValueError(
                f"encoder frames up to {stop} need mel frame {high - 1}; {mel.shape[-1]} are known."
            )
        high = min(high, mel.shape[-1])
        x = mel[:, low:high].to(self.conv1.weight.dtype)
        x = F.pad(x, (int(start == 0), int(clip_end and high == mel.shape[-1])))
        x = F.gelu(F.conv1d(x, self.conv1.weight, self.conv1.bias))
        x = F.gelu(F.conv1d(F.pad(x, (int(start == 0), 0)), self.conv2.weight, self.conv2.bias, stride=2))
        return x.transpose(0, 1) + self.positions[start:stop].to(x.dtype)

    def tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """`(f, width)` frames of one clip -> `(ceil(f / k), llm_width)` tokens (the last one zero-padded)."""
        count = math.ceil(frames.shape[0] / self.k)
        stacked = F.pad(frames, (0, 0, 0, count * self.k - frames.shape[0])).reshape(
            count, self.k * self.width
        )
        return self._project(stacked)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """`(n_mels, 2F)` or `(B, n_mels, 2F)` -> `([B,] ceil(F / k), llm_width)`."""
        single = mel.dim() == 2
        x = self.frames(mel.unsqueeze(0) if single else mel)
        b, f, d = x.shape
        tokens = math.ceil(f / self.k)
        x = F.pad(x, (0, 0, 0, tokens * self.k - f)).reshape(b, tokens, self.k * d)
        y = self._project(x)
        return y[0] if single else y

    def _project(self, stacked: torch.Tensor) -> torch.Tensor:
        y = self.proj(self.norm(stacked))
        # the RMS is taken in float32: a bfloat16 mean over the LLM width loses the scale's third digit
        rms = y.float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        return y * (self.target_rms.float() / rms).to(y.dtype)

    def embed_clips(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embed clips of different lengths with one batched conv pass; each clip keeps only its own
        frames before stacking, so the result equals embedding every clip alone."""
        lengths = [m.shape[-1] for m in mels]
        batch = torch.stack([F.pad(m, (0, max(lengths) - m.shape[-1])) for m in mels])
        frames = self.frames(batch)
        return [self.tokens(frames[i, : (n + 1) // 2]) for i, n in enumerate(lengths)]

    def num_tokens(self, frames: int) -> int:
        """Audio tokens for a clip with `frames` 50-Hz encoder frames."""
        return math.ceil(frames / self.k)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What the inference checkpoint stores (all of it: the frozen positions are part of the layer)."""
        return self.state_dict()

    def describe(self) -> dict[str, float | int]:
        """Sizes needed to rebuild the layer before loading its weights."""
        return {
            "n_mels": self.n_mels,
            "width": self.width,
            "llm_width": self.llm_width,
            "k": self.k,
            "target_rms": float(self.target_rms),
        }


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's sinusoidal table, used only when no teacher is given to copy from (shapes still match)."""
    half = channels // 2
    scale = math.log(10000) / max(half - 1, 1)
    inv = torch.exp(-scale * torch.arange(half))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


def token_embedding_rms(embeddings: nn.Module, vocab_size: int, chunk: int = 8192) -> float:
    """RMS of the LLM's token embeddings as the model sees them (through the module, so scaled
    embeddings such as Gemma's are measured after their scale)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, vocab_size, chunk):
            ids = torch.arange(start, min(start + chunk, vocab_size))
            out = embeddings(ids.unsqueeze(0)).float()
            total += float(out.pow(2).sum())
            count += out.numel()
    return math.sqrt(total / count)
