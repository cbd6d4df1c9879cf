"""The baseline AuRA claims to beat: a frozen Whisper encoder bridged to the LLM by an MLP projector.

`BridgeModel` is the bridge's audio path (frozen encoder -> stack k frames -> LayerNorm + MLP to the LLM
width). Plugged into `AuraStudent` as its audio module, it shares the prompt splicing, LoRA, trainer,
data and checkpoint format with AuRA, so the two differ only in what hears the audio: at inference the
bridge runs the whole Whisper encoder on a 30-s window, AuRA runs a conv stem and a Linear.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aura.audio.features import WINDOW_MEL_FRAMES
from aura.teacher.cache import load_states, save_states


class BridgeModel(nn.Module):
    """Unpadded log-mel clips -> `(ceil(F / k), llm_width)` embeddings through the frozen encoder."""

    def __init__(self, teacher: Any, llm_width: int, k: int, hidden: int | None = None) -> None:
        super().__init__()
        self.encoder = teacher.model.get_encoder()
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.n_mels, self.width, self.k, self.llm_width = teacher.n_mels, teacher.width, k, llm_width
        self.hidden = hidden or llm_width
        self.norm = nn.LayerNorm(k * self.width)
        self.proj = nn.Sequential(
            nn.Linear(k * self.width, self.hidden), nn.GELU(), nn.Linear(self.hidden, llm_width)
        )
        # Training revisits each clip every epoch and the encoder is frozen, so its output is kept (keyed
        # by the mel's bytes): after the first epoch a bridge step costs what an AuRA joint step does.
        # With a `store` folder (the trainer sets one) it is also kept on disk, for resumes and later runs,
        # and used in eval mode too, so the trainer's dev evaluations encode each dev clip once.
        self._encoded: dict[str, torch.Tensor] = {}
        self.store: Path | None = None

    def train(self, mode: bool = True) -> BridgeModel:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout, whatever the trainer does
        return self

    @torch.no_grad()
    def encode(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Whisper needs its 30-s window: each clip's mel is extended with the log-mel value of silence
        (Whisper's normalisation maps zeros to the clip's peak - 2), encoded, and cut to its frames."""
        padded = torch.stack(
            [F.pad(m, (0, WINDOW_MEL_FRAMES - m.shape[-1]), value=float(m.max()) - 2.0) for m in mels]
        )
        states = self.encoder(padded.to(next(self.proj.parameters()).dtype)).last_hidden_state
        return [states[i, : (mel.shape[-1] + 1) // 2] for i, mel in enumerate(mels)]

    def _encode_cached(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        keys = [hashlib.sha1(m.float().contiguous().numpy().tobytes()).hexdigest() for m in mels]
        paths = [self.store / key[:2] / f"{key}.safetensors" if self.store else None for key in keys]
        for key, path in zip(keys, paths, strict=True):
            if key not in self._encoded and path is not None and path.is_file():
                self._encoded[key] = load_states(path)
        todo = [i for i, key in enumerate(keys) if key not in self._encoded]
        if todo:
            for i, states in zip(todo, self.encode([mels[i] for i in todo]), strict=True):
                self._encoded[keys[i]] = states
                if paths[i] is not None:
                    save_states(states, paths[i])
        return [self._encoded[key] for key in keys]

    def embed_clips(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stack k encoder frames per token and project them to the LLM width."""
        encoded = self._encode_cached(mels) if self.training or self.store else self.encode(mels)
        out = []
        for states in encoded:
            frames = states.shape[0]
            tokens = math.ceil(frames / self.k)
            x = F.pad(states, (0, 0, 0, tokens * self.k - frames)).reshape(tokens, self.k * self.width)
            out.append(self.proj(self.norm(x)))
        return out

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Projector weights only: the encoder is the teacher's, reloaded by name."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def describe(self) -> dict[str, int]:
        return {
            "n_mels": self.n_mels,
            "width": self.width,
            "llm_width": self.llm_width,
            "k": self.k,
            "hidden": self.hidden,
        }
