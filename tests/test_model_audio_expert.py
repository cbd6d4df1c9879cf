"""Audio-expert adapters: LoRA at audio positions only, the exact base LLM everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm, tone_clip

from aura.config import ModelConfig
from aura.infer.aura_model import AuraModel
from aura.model.llm import decoder_layers
from aura.model.student import AuraStudent


def _expert(tiny_tokenizer, tiny_teacher) -> AuraStudent:
    torch.manual_seed(0)
    llm = build_tiny_llm(tiny_tokenizer)
    blocks = len(decoder_layers(llm))
    config = ModelConfig(lora_rank=4, lora_alpha=4, adapter="audio-expert", lora_layers=blocks)
    student = AuraStudent.build(config, tiny_teacher, llm, tiny_tokenizer)
    with torch.no_grad():  # a trained-looking adapter: B = 0 would make every test pass trivially
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return student.eval()


@pytest.fixture()
def expert(tiny_tokenizer, tiny_teacher, one_thread) -> AuraStudent:
    return _expert(tiny_tokenizer, tiny_teacher)


def _logits(student: AuraStudent, text: str, mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = student.build_batch([text], [mels])
    with torch.no_grad(), student.positions(batch.audio_mask):
        out = student.llm(inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions)
    return out.logits, batch.audio_mask


def test_text_only_logits_are_bit_identical_to_the_base_llm(expert, tiny_tokenizer) -> None:
    base = build_tiny_llm(tiny_tokenizer).eval()  # the same seed-0 weights, never wrapped by peft
    text = expert.render_prompt("what is the red house", audio=False)
    got, _ = _logits(expert, text, [])
    ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = base(input_ids=ids).logits
    assert torch.equal(got, want)


def test_adapters_act_at_audio_positions_only(expert) -> None:
    """Text before the audio cannot see it (causal), so it must equal the base LLM exactly there; the
    audio positions themselves must differ from the adapter-free run."""
    mel = [expert.audio_features(tone_clip(1.0, 3))]
    text = expert.render_prompt("say it again <audio> please")
    with_expert, audio = _logits(expert, text, mel)
    batch = expert.build_batch([text], [mel])
    with torch.no_grad(), expert.llm.disable_adapter():
        plain = expert.llm(
            inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions
        ).logits
    first_audio = int(audio[0].nonzero()[0])
    assert torch.equal(with_expert[0, :first_audio], plain[0, :first_audio])
    assert not torch.allclose(with_expert[0, audio[0]], plain[0, audio[0]], atol=1e-3)


def test_text_positions_of_a_mixed_prompt_get_no_update(expert) -> None:
    """A text token's own projections take no LoRA update: zeroing every adapter's input at text
    positions is the same as computing the full LoRA and masking its output there."""
    mel = [expert.audio_features(tone_clip(0.8, 5))]
    text = expert.render_prompt("<audio> what is it")
    batch = expert.build_batch([text], [mel])
    layer = decoder_layers(expert.llm)[0].self_attn.q_proj
    seen: list[torch.Tensor] = []
    handle = layer.lora_B["default"].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad(), expert.positions(batch.audio_mask):
        expert.llm(inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions)
    handle.remove()
    update = seen[0][0]
    assert torch.count_nonzero(update[~batch.audio_mask[0]]) == 0
    assert torch.count_nonzero(update[batch.audio_mask[0]]) > 0


def test_gradients_reach_only_through_audio_positions(expert) -> None:
    expert.train()
    lora = [p for n, p in expert.named_parameters() if "lora_" in n]
    text = expert.render_prompt("hear this", audio=False)
    loss, _ = expert.forward_lm(expert.build_batch([text], [[]], responses=["the cat"]))
    loss.backward()  # a text-only batch still has a graph, and gives the adapters exactly nothing
    assert all(p.grad is not None and not p.grad.any() for p in lora)
    mel = [expert.audio_features(tone_clip(0.8, 2))]
    batch = expert.build_batch([expert.render_prompt("<audio> hear this")], [mel], responses=["the cat"])
    expert.forward_lm(batch)[0].backward()
    assert any(p.grad.any() for p in lora)


def test_expert_cannot_merge_and_round_trips(expert, tiny_tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be merged"):
        expert.merge_lora()
    expert.save_pretrained(tmp_path / "final")
    loaded = AuraStudent.from_pretrained(
        tmp_path / "final", llm=build_tiny_llm(tiny_tokenizer), tokenizer=tiny_tokenizer
    )
    assert loaded.expert is not None
    mel = [expert.audio_features(tone_clip(1.2, 7))]
    text = expert.render_prompt("<audio> transcribe")
    assert torch.allclose(_logits(expert, text, mel)[0], _logits(loaded, text, mel)[0], atol=1e-5)


def test_generation_runs_the_adapters_in_the_audio_prefill_only(expert) -> None:
    """Decoding with a KV cache: the prompt's audio positions take the update, every generated (text)
    token runs with the adapters off, and a text-only request never calls an adapter."""
    model = AuraModel(expert)  # what from_pretrained builds: merge never applies to audio experts
    assert not model.merged
    layer = decoder_layers(expert.llm)[0].self_attn.q_proj
    calls: list[int] = []
    handle = layer.lora_B["default"].register_forward_hook(
        lambda _m, inputs, _o: calls.append(inputs[0].shape[1])
    )
    model.generate(prompt="what is the red house", max_new_tokens=4)
    assert calls == []
    model.generate(audio=tone_clip(1.0, 11), prompt="<audio> what is it", max_new_tokens=4)
    handle.remove()
    assert len(calls) == 1 and calls[0] > 1  # one call, over the whole prompt


@pytest.mark.real
def test_real_llm_text_only_generation_equals_the_base(tiny_teacher) -> None:
    """SmolLM2-135M-Instruct with audio-expert adapters on all 30 blocks: a text-only chat gives the
    base LLM's greedy tokens exactly."""
    from aura.model.llm import load_llm

    torch.manual_seed(0)
    llm, tokenizer = load_llm("smollm2-135m-instruct")
    config = ModelConfig(lora_rank=8, lora_alpha=8, adapter="audio-expert", lora_layers=30)
    student = AuraStudent.build(config, tiny_teacher, llm, tokenizer)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    question = "What is the capital of France?"
    got = AuraModel(student.eval()).generate(prompt=question, max_new_tokens=12)
    base, tokenizer = load_llm("smollm2-135m-instruct")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = base.generate(ids, max_new_tokens=12, do_sample=False)
    want = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert got == want.strip(), (got, want)
    assert "Paris" in got
