"""`aura export --format gguf`: the registry's base GGUF re-encoded (f32 = the torch weights bit for bit), the
peft LoRA as a llama.cpp adapter GGUF (names, shapes, alpha, llama's q/k row order), a folder the torch
backend loads too, and clear errors for what llama.cpp cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from aura.cli.app import app
from aura.infer.aura_model import AuraModel
from aura.infer.gguf_export import (
    LLM_FILE,
    LORA_FILE,
    MANIFEST,
    GGUFExportError,
    export_gguf,
    rope_order,
    write_base,
)
from aura.model.llm import base_model
from aura.registry import DEFAULT_CHECKPOINT, native_files, resolve_model

LLM = "smollm2-135m-instruct"


def tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.mark.real
def test_f32_base_is_the_torch_llm_and_q8_0_quantizes_it(tmp_path: Path) -> None:
    """Re-encoded as f32, the registry's Q4_1 GGUF holds exactly the weights torch dequantized from it,
    with the query/key rows in llama.cpp's rope order; Q8_0 quantizes the matrices and keeps the norms."""
    reader = gguf.GGUFReader(native_files(LLM))
    write_base(reader, "llama", "f32", tmp_path / "f32.gguf")
    written = tensors(tmp_path / "f32.gguf")
    hf = load_file(resolve_model(LLM) / "model.safetensors")
    block = {"q_proj": ("attn_q", 9), "k_proj": ("attn_k", 3), "v_proj": ("attn_v", None)}
    for name, (target, heads) in block.items():
        weight = hf[f"model.layers.7.self_attn.{name}.weight"].numpy()
        expected = rope_order(weight, heads) if heads else weight
        np.testing.assert_array_equal(np.asarray(written[f"blk.7.{target}.weight"].data), expected)
    np.testing.assert_array_equal(
        np.asarray(written["token_embd.weight"].data), hf["model.embed_tokens.weight"].numpy()
    )
    write_base(reader, "llama", "q8_0", tmp_path / "q8.gguf")
    quantized = gguf.GGUFReader(tmp_path / "q8.gguf")
    assert quantized.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    kinds = {t.name: t.tensor_type for t in quantized.tensors}
    assert kinds["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert (
        quantized.get_field("tokenizer.chat_template").contents()
        == reader.get_field("tokenizer.chat_template").contents()
    )


@pytest.mark.real
def test_adapter_gguf_is_the_peft_lora_named_for_llama_cpp(tmp_path: Path) -> None:
    """`--gguf-type source`: the registry file as is beside an adapter GGUF with one lora_a/lora_b pair per
    adapted projection (peft's A and B, B rope-ordered for q/k), alpha 64 and llama.cpp's adapter keys;
    the folder is an AuRA checkpoint the torch backend loads too."""
    model = AuraModel.from_pretrained(DEFAULT_CHECKPOINT)
    out = export_gguf(model, tmp_path / "out", base_type="source")
    assert (out / LLM_FILE).read_bytes() == native_files(LLM).read_bytes()
    reader = gguf.GGUFReader(out / LORA_FILE)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 64.0
    lora = {t.name: t for t in reader.tensors}
    assert len(lora) == 2 * 7 * 30  # q, k, v, o, gate, up, down on all 30 blocks
    layers = base_model(model.student.llm).model.layers
    q, v = layers[3].self_attn.q_proj, layers[3].self_attn.v_proj
    assert np.asarray(lora["blk.3.attn_q.weight.lora_a"].data).shape == (64, 576)
    np.testing.assert_array_equal(
        np.asarray(lora["blk.3.attn_q.weight.lora_b"].data),
        rope_order(q.lora_B["default"].weight.detach().numpy(), 9).astype(np.float16),
    )
    np.testing.assert_array_equal(
        np.asarray(lora["blk.3.attn_v.weight.lora_b"].data),
        v.lora_B["default"].weight.detach().numpy().astype(np.float16),
    )
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["llm_type"] == "source" and manifest["stop_ids"] == sorted(model.stop_ids)
    reloaded = AuraModel.from_pretrained(out)
    for a, b in zip(reloaded.student.parameters(), model.student.parameters(), strict=True):
        assert torch.equal(a, b)


def test_export_refuses_what_llama_cpp_cannot_run(tiny_run: Path, tmp_path: Path) -> None:
    model = AuraModel.from_pretrained(tiny_run)
    with pytest.raises(GGUFExportError, match="not one of the registry's GGUF models.*convert_hf_to_gguf.py"):
        export_gguf(model, tmp_path / "a")
    with pytest.raises(GGUFExportError, match="--base-gguf .*nowhere.gguf: no such file"):
        export_gguf(model, tmp_path / "b", base_gguf=tmp_path / "nowhere.gguf")
    with pytest.raises(
        GGUFExportError, match="30 blocks of width 576, but the checkpoint's LLM has 3 blocks"
    ):
        export_gguf(model, tmp_path / "c", base_gguf=native_files(LLM))
    with pytest.raises(GGUFExportError, match="--gguf-type 'q3': choose one of f32, f16, q8_0, source"):
        export_gguf(model, tmp_path / "d", base_type="q3")
    merged = AuraModel.from_pretrained(tiny_run, merge=True)
    with pytest.raises(GGUFExportError, match="LoRA merged into the weights"):
        export_gguf(merged, tmp_path / "e", base_gguf=native_files(LLM))
    result = CliRunner().invoke(
        app, ["export", "--model", str(tiny_run), "--out", str(tmp_path / "f"), "--format", "gguf", "--merge"]
    )
    assert isinstance(result.exception, GGUFExportError) and "leave out --merge" in str(result.exception)
    result = CliRunner().invoke(
        app, ["export", "--model", str(tiny_run), "--out", str(tmp_path / "g"), "--format", "onnx"]
    )
    assert result.exit_code == 2 and "choose hf or gguf" in result.output
