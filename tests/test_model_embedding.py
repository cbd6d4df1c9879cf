from __future__ import annotations

import math

import torch
from conftest import tone_clip

from aura.audio.features import encoder_frames, log_mel, log_mel_batch
from aura.model.embedding import AudioEmbedding, token_embedding_rms


def test_shapes_and_scale() -> None:
    torch.manual_seed(0)
    layer = AudioEmbedding(n_mels=80, width=32, llm_width=48, k=4, target_rms=0.25)
    wave = tone_clip(1.3, 0)
    mel = log_mel(wave, pad_to_30s=False)
    out = layer(mel)
    frames = encoder_frames(len(wave))
    assert out.shape == (math.ceil(frames / 4), 48)
    rms = out.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.25), atol=1e-3)


def test_batched_clips_equal_single_clips() -> None:
    torch.manual_seed(0)
    layer = AudioEmbedding(n_mels=80, width=32, llm_width=48, k=3, target_rms=1.0)
    mels = [log_mel(tone_clip(s, i), pad_to_30s=False) for i, s in enumerate((0.5, 1.1, 0.77))]
    batched = layer.embed_clips(mels)
    for mel, out in zip(mels, batched, strict=True):
        assert torch.allclose(layer(mel), out, atol=1e-5)


def test_initialised_from_teacher_reproduces_its_layer_zero(tiny_teacher) -> None:
    encoder = tiny_teacher.model.get_encoder()
    layer = AudioEmbedding(n_mels=80, width=64, llm_width=16, k=4, target_rms=1.0)
    layer.init_from_whisper(encoder)
    assert not any("positions" in n for n, _ in layer.named_parameters())  # frozen table
    wave = tone_clip(1.0, 3)
    frames = encoder_frames(len(wave))
    teacher0 = tiny_teacher.encode_mel(log_mel_batch([wave]))[0][0, :frames]
    student0 = layer.frames(log_mel(wave, pad_to_30s=False)[None])[0]
    # identical except the last frame, whose conv window sees the 30-s padding in the teacher
    assert torch.allclose(student0[:-1], teacher0[:-1], atol=1e-4)


def test_token_embedding_rms_matches_weights() -> None:
    table = torch.nn.Embedding(100, 8)
    expected = table.weight.pow(2).mean().sqrt().item()
    assert math.isclose(token_embedding_rms(table, 100, chunk=7), expected, rel_tol=1e-5)
