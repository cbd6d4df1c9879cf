"""Audio-expert adapters: LoRA that acts at audio positions only (`model.adapter=audio-expert`).

In the spirit of CogVLM's visual expert: every adapted block has its own weights for audio tokens,
while text tokens run the exact base weights. The first blocks' audio adapters are the distilled
encoder; the later ones give reading the audio its own capacity without touching what the LLM does
with text. A prompt without audio, and the text positions of a mixed prompt, therefore compute what
the base LLM computes: text ability is kept by construction, not by a loss.

The adapters are ordinary peft LoRA weights (same files, same loading); what makes them experts is a
forward pre-hook on each `lora_A` that zeroes its input outside the audio positions. LoRA has no bias,
so `B(A(x * m)) = m * B(A(x))`: the update is exactly zero at text positions. The position mask is
state, set by whoever runs the forward (`at`), and kept until the next one sets it, so that a
gradient-checkpointing recomputation during backward sees the mask of its own forward.

Cost at inference: the adapters cannot be folded into the weights (their effect depends on the
position), so a prefill pays the LoRA matmuls (rank r per adapted projection, ~15-25 % of SmolLM2's
block FLOPs at r=64); decoding text tokens runs with the adapters switched off and costs nothing extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn


class AudioExpert:
    """The audio-position mask shared by every `lora_A` of one peft model."""

    def __init__(self, llm: PeftModel) -> None:
        self.llm = llm
        self.mask: torch.Tensor | None = None  # (B, T) bool; None = no audio anywhere
        self._handles = [
            lora_a.register_forward_pre_hook(self._gate)
            for module in llm.modules()
            if isinstance(module, LoraLayer)
            for lora_a in module.lora_A.values()
        ]
        if not self._handles:
            raise ValueError("audio-expert adapters need a peft LoRA model; this one has no LoRA layers.")

    def _gate(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        if self.mask is None:
            return (x * 0,)
        if self.mask.shape != x.shape[:2]:
            raise RuntimeError(
                f"audio-expert mask {tuple(self.mask.shape)} does not match the input {tuple(x.shape[:2])}: "
                "set it with `at(batch.audio_mask)` before each forward over a new batch."
            )
        return (x * self.mask[..., None].to(x.dtype),)

    def set(self, mask: torch.Tensor | None) -> None:
        """Audio positions of the next forward (kept for a later recomputation of that forward)."""
        self.mask = mask if mask is None or bool(mask.any()) else None

    @contextlib.contextmanager
    def at(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Run the forwards inside with adapters at `mask`'s positions. With no audio at all and no
        gradient wanted, the adapters are switched off: the base LLM runs untouched and no LoRA matmul is
        spent (with gradients, the zeroed update keeps the graph, so a text-only batch still trains)."""
        self.set(mask)
        if self.mask is None and not torch.is_grad_enabled():
            with self.llm.disable_adapter():
                yield
        else:
            yield

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
