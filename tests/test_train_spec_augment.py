from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm, build_tiny_teacher, build_tiny_tokenizer, make_manifest
from safetensors.torch import load_file

from aura.config import load_config
from aura.train.spec_augment import FREQ_MASKS, FREQ_WIDTH, TIME_WIDTH, spec_augment
from aura.train.step import TrainModule
from aura.train.trainer import train


def test_masks_a_copy_in_bands_and_spans_within_the_policy() -> None:
    mel = torch.randn(80, 1000)
    before = mel.clone()
    out = spec_augment(mel, torch.Generator().manual_seed(3))
    assert torch.equal(mel, before)  # the cached mel is never touched
    fill = mel.mean()
    masked_bins = (out == fill).all(dim=1)
    masked_frames = (out == fill).all(dim=0)
    assert 0 < int(masked_bins.sum()) <= FREQ_MASKS * FREQ_WIDTH
    assert 0 < int(masked_frames.sum()) <= (1000 // 100) * TIME_WIDTH
    changed = out != mel
    assert torch.equal(changed, masked_bins[:, None] | masked_frames[None, :])  # only whole bands and spans
    again = spec_augment(mel, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert not torch.equal(out, spec_augment(mel, torch.Generator().manual_seed(4)))


def test_a_clip_shorter_than_a_mask_is_masked_inside_its_length() -> None:
    mel = torch.randn(80, 7)
    out = spec_augment(mel, torch.Generator().manual_seed(0))
    assert out.shape == mel.shape


def _run(data: Path, cache: Path, run_dir: Path, *extra: str) -> Path:
    config = load_config(
        None,
        [
            f"data.train={data}",
            f"distill.cache_dir={cache}",
            "model.lora_rank=4",
            "model.lora_alpha=4",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.save_every=3",
            "train.log_every=3",
            *extra,
        ],
    )
    tokenizer = build_tiny_tokenizer()
    return train(
        config,
        run_dir,
        teacher=build_tiny_teacher(),
        llm=build_tiny_llm(tokenizer),
        tokenizer=tokenizer,
        progress=False,
    )


def test_training_masks_the_students_input_and_the_run_is_reproducible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, cache = make_manifest(tmp_path / "data"), tmp_path / "cache"
    seen: list[torch.Tensor] = []
    original = TrainModule.forward

    def recording(self, batch):
        if self.training:
            seen.append(batch.mels[0][0])
        return original(self, batch)

    monkeypatch.setattr(TrainModule, "forward", recording)
    plain = _run(data, cache, tmp_path / "plain")
    clean = list(seen)
    seen.clear()
    masked = _run(data, cache, tmp_path / "masked", "train.spec_augment=true")
    assert all(not torch.equal(a, b) for a, b in zip(clean, seen, strict=True))  # same clips, masked
    again = _run(data, cache, tmp_path / "again", "train.spec_augment=true")
    name = "adapter_model.safetensors"
    want, got = load_file(masked / name), load_file(again / name)
    assert all(torch.equal(want[k], got[k]) for k in want)
    other = load_file(plain / name)
    assert any(not torch.equal(want[k], other[k]) for k in want)
