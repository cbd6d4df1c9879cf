from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tone_clip

from aura.audio.features import encoder_frames, log_mel_batch
from aura.audio.frames import pool_frames
from aura.config import ConfigError
from aura.distill.heads import (
    DistillHeads,
    TranscriptReader,
    distill_terms,
    layer_map,
    linear_cka,
)
from aura.teacher.cache import TeacherCache


def test_layer_maps() -> None:
    assert layer_map("identity", 4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert layer_map("strided", 8, 4) == [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4)]
    assert layer_map([[0, 0], [3, 4]], 4, 4) == [(0, 0), (3, 4)]
    with pytest.raises(ConfigError, match="out of range"):
        layer_map([[5, 0]], 4, 4)
    with pytest.raises(ConfigError, match="layer_map"):
        layer_map("diagonal", 4, 4)


def test_text_and_padding_never_enter_the_loss() -> None:
    torch.manual_seed(0)
    heads = DistillHeads([(0, 0), (2, 1)], student_width=8, teacher_width=6)
    audio = torch.tensor([[False, True, True, False, False], [True, True, True, True, False]])
    states = {s: torch.randn(2, 5, 8) for s in (0, 2)}
    targets = [torch.randn(int(audio.sum()), 6) for _ in range(2)]
    loss, metrics = distill_terms(heads, states, audio, targets)
    poisoned = {s: v.clone() for s, v in states.items()}
    for v in poisoned.values():
        v[~audio] = float("nan")  # any text or padding position reaching the loss would make it NaN
    loss2, metrics2 = distill_terms(heads, poisoned, audio, targets)
    assert torch.isfinite(loss2) and torch.equal(loss, loss2)
    assert all(torch.equal(metrics[k], metrics2[k]) for k in metrics)
    assert set(metrics) == {f"{m}_{t}" for m in ("cos", "ccos", "cka") for t in (0, 1)}
    with pytest.raises(ValueError, match="teacher targets"):
        distill_terms(heads, states, audio, [t[:-1] for t in targets])


def test_standardised_targets_and_centred_cosine() -> None:
    torch.manual_seed(0)
    heads = DistillHeads([(1, 1)], 4, 3)
    mean, std = torch.tensor([[5.0, -2.0, 1.0]]), torch.tensor([[2.0, 0.5, 1.0]])
    heads.set_statistics(mean, std, torch.tensor([3.0]), standardize=True)
    target = torch.randn(10, 3) * std + mean
    z = heads.loss_space(0, target)
    assert torch.allclose(heads.to_teacher_space(0, z), target, atol=1e-5)
    # a student that always predicts the mean scores high raw cosine but zero-ish centred cosine
    states = {1: torch.zeros(1, 10, 4)}
    with torch.no_grad():
        heads.heads[0][1].weight.zero_()
        heads.heads[0][1].bias.zero_()
    _, metrics = distill_terms(heads, states, torch.ones(1, 10, dtype=torch.bool), [target])
    assert metrics["cos_1"] > 0.8 and abs(metrics["ccos_1"]) < 1e-6


def test_transcript_loss_needs_the_teachers_last_layer(tiny_teacher) -> None:
    with pytest.raises(ConfigError, match="decoder_weight needs the teacher's last layer"):
        TranscriptReader(tiny_teacher, DistillHeads([(0, 0), (1, 1)], 8, 64))
    reader = TranscriptReader(tiny_teacher, DistillHeads([(0, 0), (3, 2)], 8, 64))
    assert (reader.index, reader.student_layer) == (1, 3)


def test_linear_cka() -> None:
    torch.manual_seed(0)
    x = torch.randn(50, 5)
    rotation = torch.linalg.qr(torch.randn(5, 5))[0]
    assert linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, torch.randn(50, 5)) < 0.5


def test_heads_save_load(tmp_path: Path) -> None:
    heads = DistillHeads([(0, 0), (3, 2)], 8, 6)
    heads.set_statistics(
        torch.randn(2, 6), torch.rand(2, 6) + 0.5, torch.tensor([1.0, 2.0]), standardize=True
    )
    heads.save(tmp_path / "heads.safetensors")
    loaded = DistillHeads.load(tmp_path / "heads.safetensors")
    assert loaded.pairs == heads.pairs and bool(loaded.standardize)
    for (name, a), b in zip(heads.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a.float(), b.float()), name


def test_pool_frames() -> None:
    states = torch.arange(10.0).reshape(5, 2)
    pooled = pool_frames(states, 2)
    assert torch.equal(pooled, torch.tensor([[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]))  # last run: 1 real frame


def test_teacher_cache_computes_each_clip_once(tiny_teacher, tmp_path: Path) -> None:
    calls = []
    original = tiny_teacher.encode_mel

    def counting(mel):
        calls.append(mel.shape[0])
        return original(mel)

    tiny_teacher.encode_mel = counting
    try:
        cache = TeacherCache(tmp_path, tiny_teacher.name, k=4, teacher=tiny_teacher)
        waves = [tone_clip(0.7, 1), tone_clip(1.1, 2)]
        assert cache.fill(waves) == 2 and cache.fill(waves) == 0 and sum(calls) == 2
        again = TeacherCache(tmp_path, tiny_teacher.name, k=4)  # no teacher: must be served from disk
        states = again.get(waves[1])
        frames = encoder_frames(len(waves[1]))
        full = original(log_mel_batch([waves[1]]))
        assert states.shape == (tiny_teacher.num_layers + 1, -(-frames // 4), tiny_teacher.width)
        assert torch.allclose(states[2], pool_frames(full[2][0, :frames], 4), atol=1e-5)
        assert TeacherCache(tmp_path, tiny_teacher.name, k=2).missing(waves) == [
            0,
            1,
        ]  # pooling is in the key
        assert TeacherCache(tmp_path, "other", k=4).missing(waves) == [0, 1]  # so is the teacher
        mean, std, norm = again.statistics(waves, [0, 2])
        assert mean.shape == std.shape == (2, tiny_teacher.width) and norm.shape == (2,)
    finally:
        tiny_teacher.encode_mel = original
