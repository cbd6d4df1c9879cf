"""Float32 attention inside bf16 CPU training steps: which students get it, and that it changes nothing
but the precision of attention."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from aura.train.cpu_attention import FLOAT32_SDPA, use_float32_attention, wants_float32_attention
from tests.conftest import build_tiny_llm


def test_only_sdpa_students_get_it() -> None:
    assert wants_float32_attention("sdpa")
    assert not wants_float32_attention("eager")  # eager is chosen for a reason


def _logits_and_grads(llm: torch.nn.Module, ids: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, list]:
    llm.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        logits = llm(input_ids=ids).logits
    logits.float().square().mean().backward()
    return logits.detach().float(), [p.grad.clone() for p in llm.parameters() if p.grad is not None]


def _attention_output_dtype(llm: torch.nn.Module, ids: torch.Tensor) -> torch.dtype:
    """The dtype attention hands to the first block's output projection in a bf16-autocast forward."""
    seen = []
    o_proj = llm.model.layers[0].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        llm(input_ids=ids)
    handle.remove()
    return seen[0]


def test_float32_attention_is_sdpa_outside_autocast_and_float32_inside(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    ids = torch.randint(0, len(tiny_tokenizer), (2, 24), generator=torch.Generator().manual_seed(0))
    plain, switched = build_tiny_llm(tiny_tokenizer).train(), build_tiny_llm(tiny_tokenizer).train()
    assert use_float32_attention(switched)
    assert switched.config._attn_implementation == FLOAT32_SDPA
    # float32 steps, evaluation and decoding: exactly SDPA
    ref_logits, ref_grads = _logits_and_grads(plain, ids, autocast=False)
    logits, grads = _logits_and_grads(switched, ids, autocast=False)
    assert torch.equal(logits, ref_logits)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))
    # under bf16 autocast: attention's output is float32 (bf16 with plain SDPA), the model the same
    # within bf16 rounding, and every weight still gets a gradient
    assert _attention_output_dtype(plain, ids) == torch.bfloat16
    assert _attention_output_dtype(switched, ids) == torch.float32
    mixed_logits, mixed_grads = _logits_and_grads(switched, ids, autocast=True)
    assert len(mixed_grads) == len(ref_grads)
    assert torch.allclose(mixed_logits, ref_logits, atol=0.05)
