from __future__ import annotations

import math

import pytest
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


@pytest.mark.parametrize(("seconds", "chunk"), [(1.3, 8), (0.96, 48), (0.5, 1), (2.0, 20)])
def test_conv_stem_chunk_by_chunk_equals_the_whole_clip(seconds: float, chunk: int) -> None:
    """Each chunk is computed from only the mel frames a stream has by then (up to 2 * stop), carrying the
    frames before it as context; the last chunk reads the clip's end padding. Together: the whole clip."""
    torch.manual_seed(0)
    layer = AudioEmbedding(n_mels=80, width=32, llm_width=48, k=4, target_rms=1.0)
    mel = log_mel(tone_clip(seconds, 4), pad_to_30s=False)
    frames = mel.shape[1] // 2
    with torch.no_grad():
        whole = layer.frames(mel[None])[0]
        pieces = []
        for start in range(0, frames, chunk):
            stop = min(start + chunk, frames)
            end = stop == frames
            known = mel if end else mel[:, : 2 * stop + 1]
            pieces.append(layer.frames_between(known, start, stop, clip_end=end))
        assert torch.allclose(torch.cat(pieces), whole, atol=1e-5)
        with pytest.raises(ValueError, match="need mel frame"):
            layer.frames_between(mel[:, : 2 * chunk], 0, chunk)
        # a chunk's frames do not depend on mel frames past the one its last frame reads
        changed = mel.clone()
        changed[:, 2 * chunk + 1 :] += 3.0
        if frames > chunk:
            assert torch.equal(layer.frames_between(changed, 0, chunk), layer.frames_between(mel, 0, chunk))
        assert torch.allclose(layer.tokens(whole), layer(mel), atol=1e-5)


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
