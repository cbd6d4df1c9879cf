"""`train.init_from`: start a run from a previous one's adapter, audio embedding and distillation heads.

The adapter may have a lower LoRA rank than the new run's (`model.lora_rank`): its factors fill the first
rows of the new A and columns of the new B, B's are rescaled to the new alpha / rank, and the rest of B
stays zero, so the student starts as exactly the previous one and the extra rank is capacity to learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from aura.distill.heads import HEADS_FILE, DistillHeads
from aura.model.checkpoint import CheckpointError, read_trained_weights, run_folders
from aura.model.student import AuraStudent
from aura.registry import ModelNotFoundError
from aura.train.run_dir import TrainError


def warm_start(student: AuraStudent, heads: DistillHeads | None, previous: str) -> bool:
    """Load `previous`'s trained weights into `student` (and `heads`); True when its heads were loaded."""
    try:
        final, run_dir = run_folders(previous)
        adapter, audio = read_trained_weights(final)
    except (CheckpointError, ModelNotFoundError) as err:
        raise TrainError(f"train.init_from={previous}: {err}") from err
    try:
        set_peft_model_state_dict(student.llm, grow_rank(adapter, student, _lora_scale(final)))
        student.audio.load_state_dict(audio, strict=False)
        if heads is not None and (run_dir / HEADS_FILE).is_file():
            previous_heads = DistillHeads.load(run_dir / HEADS_FILE)
            if previous_heads.pairs == heads.pairs:
                heads.heads.load_state_dict(previous_heads.heads.state_dict())
                return True
    except RuntimeError as err:
        raise TrainError(
            f"train.init_from={previous}: its weights do not fit this model config ({err})."
        ) from err
    return False


def _lora_scale(final: Path) -> float | None:
    """alpha / rank of the adapter in `final` (None when its config does not say)."""
    path = final / "adapter_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return float(config["lora_alpha"]) / float(config["r"])


def grow_rank(
    adapter: dict[str, torch.Tensor], student: AuraStudent, scale: float | None
) -> dict[str, torch.Tensor]:
    """`adapter` with each lower-rank LoRA pair embedded in the student's own (same function, more rank)."""
    own = get_peft_model_state_dict(student.llm)
    new_scale = student.config.lora_alpha / student.config.lora_rank
    grown = dict(adapter)
    for key, weight in adapter.items():
        target = own.get(key)
        if target is None or target.shape == weight.shape:
            continue
        if "lora_A" in key and weight.shape[0] < target.shape[0] and weight.shape[1:] == target.shape[1:]:
            tensor = target.detach().clone()
            tensor[: weight.shape[0]] = weight.to(tensor.dtype)
        elif "lora_B" in key and weight.shape[1] < target.shape[1] and weight.shape[0] == target.shape[0]:
            tensor = torch.zeros_like(target)
            ratio = 1.0 if scale is None else scale / new_scale
            tensor[:, : weight.shape[1]] = weight.to(tensor.dtype) * ratio
        else:
            continue  # a real mismatch: set_peft_model_state_dict reports it
        grown[key] = tensor
    return grown
