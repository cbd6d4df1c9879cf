"""The student LLM: a registry name or any local Hugging Face folder → `(model, tokenizer)`, and the parts of
a (possibly peft-wrapped) causal LM the student reaches into."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from aura.registry import resolve_model


def load_llm(
    name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LLM by registry name or folder; the tokenizer gets a pad token if it has none."""
    folder = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def base_model(llm: nn.Module) -> nn.Module:
    """The causal LM itself, under its peft wrapper if it has one (the same modules, LoRA layers included)."""
    return llm.get_base_model() if isinstance(llm, PeftModel) else llm


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder block list of a (possibly peft-wrapped) causal LM."""
    base = base_model(llm)
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(base).__name__}: cannot find its decoder blocks (expected `.layers`).")
    return layers
