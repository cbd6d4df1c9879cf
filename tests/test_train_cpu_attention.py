"""Float32 attention inside bf16 CPU training steps: which students get it, and that it changes nothing
but the precision of attention."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from aura.train.cpu_attention import FLOAT32_SDPA, use_float32_attention, wants_float32_attention
from tests.conftest import build_tiny_llm

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_only_sdpa_students_on_cpus_without_amx_get_it() -> None:
    assert wants_float32_attention(CPU, "sdpa", {"amx_bf16": False, "avx512_bf16": True})
    assert not wants_float32_attention(CPU, "sdpa", {"amx_bf16": True})
    assert not wants_float32_attention(CUDA, "sdpa", {"amx_bf16": False})
    assert not wants_float32_attention(CPU, "eager", {"amx_bf16": False})  # eager is chosen for a reason


def _logits_and_grads(llm: torch.nn.Module, ids: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, list]:
    llm.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        logits = llm(input_ids=ids).logits
    logits.float().square().mean().backward()
    return logits.detach().float(), [p.grad.clone() for p in llm.parameters() if p.grad is not None]


def test_float32_attention_is_sdpa_outside_autocast_and_float32_inside(
    tiny_tokenizer: PreTrainedTokenizerFast, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": False})
    ids = torch.randint(0, len(tiny_tokenizer), (2, 24))
    plain, switched = build_tiny_llm(tiny_tokenizer).train(), build_tiny_llm(tiny_tokenizer).train()
    assert use_float32_attention(switched)
    assert switched.config._attn_implementation == FLOAT32_SDPA
    # float32 steps, evaluation and decoding: exactly SDPA
    ref_logits, ref_grads = _logits_and_grads(plain, ids, autocast=False)
    logits, grads = _logits_and_grads(switched, ids, autocast=False)
    assert torch.equal(logits, ref_logits)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))
    # under bf16 autocast: the same model within bf16 rounding, and closer to float32 than bf16 attention
    bf16_logits, _ = _logits_and_grads(plain, ids, autocast=True)
    mixed_logits, mixed_grads = _logits_and_grads(switched, ids, autocast=True)
    assert len(mixed_grads) == len(ref_grads)
    assert torch.allclose(mixed_logits, ref_logits, atol=0.05)
    assert (mixed_logits - ref_logits).abs().mean() <= (bf16_logits - ref_logits).abs().mean()


def test_a_cpu_with_amx_keeps_bf16_attention(tiny_tokenizer: PreTrainedTokenizerFast, monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    llm = build_tiny_llm(tiny_tokenizer)
    assert not use_float32_attention(llm)
    assert llm.config._attn_implementation == "sdpa"
