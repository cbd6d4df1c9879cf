"""Attention in float32 inside bfloat16-autocast training steps on the CPU.

Under CPU autocast torch runs scaled-dot-product attention in bf16, and the bf16 backward of its CPU flash
kernel is about 2.5x slower than the float32 one, with or without AMX, while the matmuls around it gain from
bf16 (`benchmarks/train_profile.py`, a SmolLM2 joint step at one thread: 0.66 s against 0.27 s on an
AVX512-BF16 EPYC, 0.77 s against 0.32 s on an AMX Xeon). Computing attention alone in float32 made the whole
joint step 1.70x float32's speed instead of 1.44x on the EPYC, and 2.09x instead of 1.64x on the Xeon. The
switch is made when the step module is built, before Accelerate moves it to its device, so what acts is
the check at each call: only under CPU autocast is attention float32; on an accelerator (CUDA autocast),
in float32 steps, evaluation and decoding the function is plain SDPA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from aura.model.llm import base_model

FLOAT32_SDPA = "aura_sdpa_float32"


def float32_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' SDPA attention, computed in float32 with autocast off when CPU autocast is on."""
    if not torch.is_autocast_enabled("cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        return sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )


def wants_float32_attention(attention: str) -> bool:
    """Whether a student whose LLM runs `attention` should train with float32 attention: SDPA's (eager and
    flash-attention implementations are left as they are)."""
    return attention == "sdpa"


def use_float32_attention(llm: nn.Module) -> bool:
    """Switch `llm` (peft-wrapped or not) to float32 attention where `wants_float32_attention` says so;
    returns whether it did."""
    model = base_model(llm)
    if not wants_float32_attention(model.config._attn_implementation):
        return False
    AttentionInterface.register(FLOAT32_SDPA, float32_sdpa)
    model.set_attn_implementation(FLOAT32_SDPA)
    return True
