from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedTokenizerFast

from aura.config import ModelConfig
from aura.model.student import AuraStudent
from aura.train.run_dir import TrainError
from aura.train.warm_start import warm_start


def _student(run: Path, tokenizer: PreTrainedTokenizerFast, rank: int, alpha: int) -> AuraStudent:
    llm = build_tiny_llm(tokenizer, layers=3, seed=2, max_positions=2048, initializer_range=0.3)
    config = ModelConfig(llm=str(run / "base_llm"), lora_layers=2, lora_rank=rank, lora_alpha=alpha)
    return AuraStudent.build(config, llm=llm, tokenizer=tokenizer)


def _deltas(student: AuraStudent) -> dict[str, torch.Tensor]:
    return {
        name: module.get_delta_weight("default")
        for name, module in student.llm.named_modules()
        if isinstance(module, LoraLayer)
    }


def test_a_higher_rank_starts_as_exactly_the_previous_adapter(
    tiny_run: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    same = _student(tiny_run, tiny_tokenizer, rank=4, alpha=4)
    warm_start(same, None, str(tiny_run))
    grown = _student(tiny_run, tiny_tokenizer, rank=8, alpha=16)  # scale 2 against the run's 1
    warm_start(grown, None, str(tiny_run))
    before, after = _deltas(same), _deltas(grown)
    assert before.keys() == after.keys() and before
    for name, delta in before.items():
        assert delta.abs().max() > 0  # the run's B are random: a real update to carry over
        torch.testing.assert_close(after[name], delta, rtol=1e-5, atol=1e-6)
    # the extra rank can learn: its A rows are random, its B columns start at zero
    a = next(p for n, p in grown.llm.named_parameters() if "lora_A" in n)
    assert a.shape[0] == 8 and a[4:].abs().sum() > 0
    for name, audio in same.audio.state_dict().items():
        torch.testing.assert_close(grown.audio.state_dict()[name], audio)


def test_a_lower_rank_is_refused_with_the_run_named(
    tiny_run: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    smaller = _student(tiny_run, tiny_tokenizer, rank=2, alpha=2)
    with pytest.raises(TrainError, match=f"init_from={tiny_run}.*do not fit"):
        warm_start(smaller, None, str(tiny_run))
