from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm, tone_clip
from safetensors import safe_open

from aura.config import ConfigError, ModelConfig
from aura.model.batching import span_attention_mask
from aura.model.llm import decoder_layers
from aura.model.student import AuraStudent


@pytest.fixture()
def student(tiny_llm, tiny_tokenizer, tiny_teacher, one_thread) -> AuraStudent:
    torch.manual_seed(0)
    config = ModelConfig(lora_rank=4, lora_alpha=4)  # N = teacher layers = 2
    return AuraStudent.build(config, tiny_teacher, tiny_llm, tiny_tokenizer)


def _mels(student: AuraStudent, *seconds: float) -> list[torch.Tensor]:
    return [student.audio_features(tone_clip(s, i)) for i, s in enumerate(seconds)]


def test_span_mask() -> None:
    valid = torch.tensor([[True, True, True, True, True, False]])
    spans = torch.tensor([[0, 1, 1, 1, 0, 0]])
    mask = span_attention_mask(valid, spans, bidirectional=True, dtype=torch.float32)[0, 0] == 0
    assert mask[1, 3] and mask[3, 1]  # audio sees audio both ways
    assert not mask[0, 1] and mask[4, 1]  # text before audio cannot look ahead; after can
    assert not mask[4, 5] and not mask[2, 5]  # padding is never attended...
    assert mask[5, 5]  # ...except by itself, so its softmax row is not empty
    causal = span_attention_mask(valid, spans, bidirectional=False, dtype=torch.float32)[0, 0] == 0
    assert causal[3, 1] and not causal[1, 3]


def test_build_batch_layout(student: AuraStudent) -> None:
    mels = _mels(student, 1.0, 0.6, 1.4)
    texts = [student.render_prompt("compare <audio> with <audio> please"), student.render_prompt("")]
    batch = student.build_batch(texts, [mels[:2], mels[2:]], responses=["the cat", "a dog"])
    assert student.num_blocks == 2
    tokens = [student.audio.num_tokens((m.shape[-1] + 1) // 2) for m in mels]
    assert batch.audio_mask[0].sum() == tokens[0] + tokens[1] and batch.audio_mask[1].sum() == tokens[2]
    # right padding: the shorter row ends with padding, its positions count from its first token
    short = int(torch.tensor(batch.lengths).argmin())
    n = batch.lengths[short]
    assert n < batch.embeds.shape[1] and batch.valid[short, :n].all() and not batch.valid[short, n:].any()
    assert batch.positions[short, :n].tolist() == list(range(n))
    # labels: response tokens only (+ the template's end of turn), nothing at audio or prompt positions
    labelled = batch.labels != -100
    assert not (labelled & batch.audio_mask).any()
    decoded = student.tokenizer.decode(batch.labels[1][labelled[1]])
    assert decoded.startswith("a dog") and "<|im_end|>" in decoded
    with pytest.raises(ValueError, match="2 <audio> placeholders but 1 clips"):
        student.build_batch([texts[0]], [mels[:1]])


def test_batchmates_and_padding_do_not_change_states(student: AuraStudent) -> None:
    mels = _mels(student, 0.9, 1.6)
    texts = [
        student.render_prompt("hear <audio>"),
        student.render_prompt("a much longer prompt before <audio> ok"),
    ]
    alone = student.build_batch(texts[:1], [mels[:1]])
    batch = student.build_batch(texts, [[m] for m in mels])
    assert batch.lengths[0] < batch.embeds.shape[1]  # the row checked is the padded one
    with torch.no_grad():
        a = student.hidden_states(alone, [2], blocks=2)[2][alone.audio_mask]
        row = student.hidden_states(batch, [2], blocks=2)[2][0][batch.audio_mask[0]]
    assert torch.allclose(row, a, atol=1e-5)


def test_bidirectional_audio_sees_the_future_causal_does_not(student: AuraStudent) -> None:
    mel = _mels(student, 1.2)[0]
    text = student.render_prompt("")
    base = student.build_batch([text], [[mel]])
    changed = mel.clone()
    changed[:, -20:] += 1.0  # alter only the end of the clip
    other = student.build_batch([text], [[changed]])
    first = base.audio_mask[0].nonzero()[0, 0]
    with torch.no_grad():
        diff_bi = (
            (student.hidden_states(base, [1])[1] - student.hidden_states(other, [1])[1])[0, first].abs().max()
        )
        student.config.audio_attention = "causal"
        base_c, other_c = student.build_batch([text], [[mel]]), student.build_batch([text], [[changed]])
        diff_c = (
            (student.hidden_states(base_c, [1])[1] - student.hidden_states(other_c, [1])[1])[0, first]
            .abs()
            .max()
        )
    assert diff_c == 0 and diff_bi > 1e-6


def test_chunk_causal_audio_sees_its_chunk_and_earlier_ones(student: AuraStudent) -> None:
    """Chunks of 0.16 s (8 frames, 2 tokens at k = 4): bidirectional inside a chunk, causal across chunks."""
    student.config.audio_attention, student.config.audio_chunk_seconds = "chunk-causal", 0.16
    mel = _mels(student, 1.2)[0]
    text = student.render_prompt("")
    base = student.build_batch([text], [[mel]])
    audio = base.audio_mask[0].nonzero()[:, 0]
    allowed = base.mask[0, 0] == 0
    first, second, third = audio[0], audio[1], audio[2]  # chunk 0 holds tokens 0-1, chunk 1 tokens 2-3
    assert allowed[first, second] and allowed[second, first]  # both ways inside a chunk
    assert allowed[third, first] and not allowed[first, third]  # earlier chunks only
    assert allowed[audio[-1] + 1, audio].all()  # the text after the audio sees all of it
    changed = mel.clone()
    # alter the clip from its third chunk (encoder frame 16) on, past mel frame 32: the one the second
    # chunk's last frame reads (the stream waits 12.5 ms for it)
    changed[:, 2 * 16 + 1 :] += 1.0
    other = student.build_batch([text], [[changed]])
    with torch.no_grad():
        diff = (student.hidden_states(base, [2])[2] - student.hidden_states(other, [2])[2])[0].abs().amax(-1)
    assert diff[audio[:4]].max() == 0 and diff[audio[4:]].min() > 0


def test_chunk_causal_config_is_checked(tiny_tokenizer, tiny_teacher) -> None:
    config = ModelConfig(lora_rank=4, lora_alpha=4, audio_attention="chunk-causal", audio_chunk_seconds=0.1)
    with pytest.raises(ConfigError, match=r"audio_chunk_seconds=0.1: .*multiple of 0.08 s"):
        AuraStudent.build(config, tiny_teacher, build_tiny_llm(tiny_tokenizer), tiny_tokenizer)
    config.audio_chunk_seconds, config.arch = 0.16, "bridge"
    with pytest.raises(ConfigError, match="bridge's Whisper encoder attends over the whole clip"):
        AuraStudent.build(config, tiny_teacher, build_tiny_llm(tiny_tokenizer), tiny_tokenizer)


def test_distillation_forward_never_calls_blocks_past_n(student: AuraStudent) -> None:
    layers = decoder_layers(student.llm)
    assert len(layers) == 4

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a block past N ran")

    handles = [layer.register_forward_pre_hook(forbidden) for layer in layers[2:]]
    head = student.llm.get_base_model().lm_head.register_forward_pre_hook(forbidden)
    batch = student.build_batch([student.render_prompt("")], [_mels(student, 0.8)], stop_after_audio=True)
    states = student.hidden_states(batch, [0, 1, 2], blocks=2)
    assert sorted(states) == [0, 1, 2] and torch.equal(states[0], batch.embeds)
    states[2].sum().backward()  # gradients flow to the embedding layer and LoRA
    assert student.audio.proj.weight.grad is not None
    for h in [*handles, head]:
        h.remove()
    # and the full forward does run them
    loss, _ = student.forward_lm(
        student.build_batch([student.render_prompt("")], [_mels(student, 0.8)], ["x"])
    )
    assert torch.isfinite(loss)


def test_lora_only_on_first_n_blocks(student: AuraStudent) -> None:
    blocks_with_lora = {
        int(name.split("layers.")[1].split(".")[0])
        for name, _ in student.llm.named_parameters()
        if "lora_" in name
    }
    assert blocks_with_lora == {0, 1}


def test_checkpoint_round_trip(student: AuraStudent, tiny_tokenizer, tmp_path: Path) -> None:
    from conftest import build_tiny_llm

    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    student.save_pretrained(tmp_path / "final")
    names = sorted(p.name for p in (tmp_path / "final").iterdir())
    assert {
        "aura_config.yaml",
        "adapter_model.safetensors",
        "adapter_config.json",
        "audio_embedding.safetensors",
    } <= set(names)
    for file in ("adapter_model.safetensors", "audio_embedding.safetensors"):
        with safe_open(str(tmp_path / "final" / file), framework="pt") as handle:
            assert not any("encoder" in k or "head" in k for k in handle.keys())  # noqa: SIM118
    loaded = AuraStudent.from_pretrained(
        tmp_path / "final", llm=build_tiny_llm(tiny_tokenizer), tokenizer=tiny_tokenizer
    )
    mel = _mels(student, 1.0)
    text = [student.render_prompt("what is <audio>")]
    student.eval()
    with torch.no_grad():
        want = student.llm(**_llm_inputs(student.build_batch(text, [mel]))).logits
        got = loaded.llm(**_llm_inputs(loaded.build_batch(text, [mel]))).logits
        assert torch.allclose(want, got, atol=1e-5)
        loaded.merge_lora()
        merged = loaded.llm(**_llm_inputs(loaded.build_batch(text, [mel]))).logits
    assert torch.allclose(want, merged, atol=1e-4)


def _llm_inputs(batch) -> dict[str, torch.Tensor]:
    return {"inputs_embeds": batch.embeds, "attention_mask": batch.mask, "position_ids": batch.positions}
