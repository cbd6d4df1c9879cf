"""Attention in float32 inside bfloat16-autocast training steps on CPUs without AMX.

Under CPU autocast torch runs scaled-dot-product attention in bf16, and on a CPU without AMX the bf16
backward of its flash kernel is 2.5x slower than the float32 one (0.66 s against 0.27 s of a SmolLM2 joint
step, `benchmarks/train_profile.py`), while the matmuls around it do gain from bf16. Computing attention
alone in float32 there made the whole joint step 10 % faster on an AVX512-BF16 EPYC (1.70x float32's
speed instead of 1.53x). AMX CPUs keep bf16 attention: nothing measured says it is slower there. The
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


def wants_float32_attention(attention: str, capabilities: dict[str, Any]) -> bool:
    """Whether a student whose LLM runs `attention` should train with float32 attention on this CPU
    (`capabilities`: torch.cpu.get_capabilities()): SDPA, and bf16 without AMX tiles."""
    return attention == "sdpa" and not capabilities.get("amx_bf16", False)


def use_float32_attention(llm: nn.Module) -> bool:
    """Switch `llm` (peft-wrapped or not) to float32 attention where `wants_float32_attention` says so;
    returns whether it did."""
    model = base_model(llm)
    if not wants_float32_attention(model.config._attn_implementation, torch.cpu.get_capabilities()):
        return False
    AttentionInterface.register(FLOAT32_SDPA, float32_sdpa)
    model.set_attn_implementation(FLOAT32_SDPA)
    return True
