"""`aura export --format gguf`: an AuRA checkpoint as llama.cpp runs it.

The folder holds the base LLM as a GGUF (`llm.gguf`), the LoRA as a llama.cpp adapter GGUF
(`lora.gguf`), the audio embedding layer in safetensors and a manifest (`llamacpp.json`) that
`aura.infer.llamacpp.LlamaCppModel` reads. It is also an ordinary AuRA checkpoint folder (config, peft
adapter, tokenizer), so the torch backend answers from the same folder and the two can be compared.

The base GGUF is the registry's own file, the one the torch LLM was dequantized from, re-encoded
tensor by tensor (`f32` reproduces the torch weights bit for bit, `f16` and `q8_0` round them,
`source` keeps the file's own quantization, Q4 for the registry's LLMs); another base comes as a GGUF
the user converted with llama.cpp's `convert_hf_to_gguf.py` (`--base-gguf`). The adapter tensors take
the names llama.cpp's tensor map gives the adapted projections (`blk.N.attn_q.weight.lora_a`, ...);
for the llama architecture llama.cpp's converter reorders the rows of the query and key projections
for its rope layout (transformers undoes it when it loads a GGUF), so their `lora_b` rows are reordered
the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import torch
from peft.tuners.lora import LoraLayer

from aura import registry
from aura.infer.aura_model import AuraModel
from aura.model.checkpoint import TRAIN_CONFIG
from aura.model.llm import base_model, decoder_layers

MANIFEST = "llamacpp.json"
LLM_FILE, LORA_FILE = "llm.gguf", "lora.gguf"
# --gguf-type: how the base LLM's tensors are written (`source`: as the base GGUF has them)
BASE_TYPES: dict[str, gguf.GGMLQuantizationType | None] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "source": None,
}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
ROPE_PERMUTED = {"llama"}  # architectures whose GGUF reorders q/k rows (transformers' LlamaTensorProcessor)


class GGUFExportError(ValueError):
    """A checkpoint or base GGUF that cannot be exported for llama.cpp; the message says what to do."""


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    return field.contents() if field is not None else None


def base_gguf_for(llm: str) -> Path:
    """The registry's GGUF for the student LLM `llm`; any other base has to be converted by the user."""
    spec = registry.MODELS.get(llm)
    if spec is None or spec.fmt != "gguf":
        raise GGUFExportError(
            f"the checkpoint's LLM {llm!r} is not one of the registry's GGUF models, so there is no GGUF to "
            "put beside the adapter. Convert it with llama.cpp's converter (`python convert_hf_to_gguf.py "
            f"{llm} --outtype f16 --outfile base.gguf`) and pass it with --base-gguf base.gguf."
        )
    return registry.native_files(llm)


def check_base(reader: gguf.GGUFReader, path: Path, blocks: int, width: int) -> str:
    """The base GGUF's architecture, after checking that it is a model with the torch LLM's shape."""
    arch = str(_field(reader, "general.architecture"))
    kind = _field(reader, "general.type") or "model"
    if kind != "model":
        raise GGUFExportError(f"{path}: general.type is {kind!r}; --base-gguf takes a model GGUF.")
    if arch not in {name for name in gguf.MODEL_ARCH_NAMES.values()}:
        raise GGUFExportError(f"{path}: architecture {arch!r} is not one the gguf package knows.")
    found = (_field(reader, f"{arch}.block_count"), _field(reader, f"{arch}.embedding_length"))
    if found != (blocks, width):
        raise GGUFExportError(
            f"{path}: {found[0]} blocks of width {found[1]}, but the checkpoint's LLM has {blocks} blocks of "
            f"width {width}; --base-gguf must be the LLM the checkpoint was trained on."
        )
    return arch


def write_base(reader: gguf.GGUFReader, arch: str, base_type: str, out: Path) -> None:
    """Re-encode every tensor of the base GGUF as `base_type`; norms and other vectors stay float32,
    and Q8_0 falls back to f16 for rows that are not a whole number of its 32-value blocks."""
    qtype = BASE_TYPES[base_type]
    writer = gguf.GGUFWriter(out, arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # the writer adds these itself
        if field.name == "general.file_type":
            writer.add_file_type(FILE_TYPES[base_type])
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if values.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tensor.name, values)
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and values.shape[-1] % 32 == 0:
            writer.add_tensor(tensor.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, values.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def rope_order(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for a llama query/key projection with `heads` heads (each head's two rope
    halves interleaved), applied to the output rows of a weight or a LoRA `B`."""
    per_head = rows.shape[0] // heads
    return rows.reshape(heads, 2, per_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def write_lora(model: AuraModel, reader: gguf.GGUFReader, arch: str, dtype: type, out: Path) -> float:
    """The peft LoRA as a llama.cpp adapter GGUF; returns the alpha written (llama.cpp scales by alpha/r)."""
    llm = model.student.llm
    adapter = llm.active_adapter
    names = gguf.get_tensor_name_map(
        next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch), len(decoder_layers(llm))
    )
    heads = {
        "attn_q": int(_field(reader, f"{arch}.attention.head_count")),  # type: ignore[arg-type]
        "attn_k": int(
            _field(reader, f"{arch}.attention.head_count_kv")
            or _field(reader, f"{arch}.attention.head_count")
        ),  # type: ignore[arg-type]
    }
    tensors: dict[str, np.ndarray] = {}
    alphas = set()
    for module_name, module in base_model(llm).named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        target = names.get_name(module_name)
        if target is None:
            raise GGUFExportError(
                f"LoRA on {module_name}: llama.cpp has no tensor for it in {arch!r} models."
            )
        a = module.lora_A[adapter].weight.detach().float().numpy()
        b = module.lora_B[adapter].weight.detach().float().numpy()
        alphas.add(round(float(module.scaling[adapter]) * a.shape[0], 6))
        kind = target.rsplit(".", 1)[-1]
        if arch in ROPE_PERMUTED and kind in heads:
            b = rope_order(b, heads[kind])
        tensors[f"{target}.weight.lora_a"] = a.astype(dtype)
        tensors[f"{target}.weight.lora_b"] = b.astype(dtype)
    if len(alphas) != 1:
        raise GGUFExportError(
            f"the LoRA scales differ between projections (alpha/r of {sorted(alphas)} x r); a llama.cpp "
            "adapter has one alpha for all of them."
        )
    alpha = alphas.pop()
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return alpha


def export_gguf(
    model: AuraModel, out: str | Path, base_gguf: str | Path | None = None, base_type: str = "f16"
) -> Path:
    """Write the llama.cpp folder for `model` (loaded unmerged) into the new folder `out`.

    `base_gguf` defaults to the registry's GGUF of the checkpoint's LLM; `base_type` is one of
    `BASE_TYPES`. The adapter is written in float32 beside an f32 base and in float16 otherwise.
    """
    student = model.student
    out = Path(out)
    if base_type not in BASE_TYPES:
        raise GGUFExportError(f"--gguf-type {base_type!r}: choose one of {', '.join(BASE_TYPES)}.")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder exists and is not empty; choose a new --out folder.")
    if student.config.arch != "aura":
        raise GGUFExportError(
            "--format gguf exports AuRA checkpoints (model.arch=aura); the bridge baseline's Whisper encoder "
            "has no llama.cpp form."
        )
    if model.merged:
        raise GGUFExportError(
            "this checkpoint has its LoRA merged into the weights; export the unmerged checkpoint, whose "
            "adapter becomes the llama.cpp adapter."
        )
    source = Path(base_gguf).expanduser() if base_gguf is not None else base_gguf_for(student.config.llm)
    if not source.is_file():
        raise GGUFExportError(f"--base-gguf {source}: no such file.")
    reader = gguf.GGUFReader(source)
    width = student.llm.get_input_embeddings().weight.shape[1]
    arch = check_base(reader, source, len(decoder_layers(student.llm)), width)
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    if model.train_config is not None:  # the run's system prompt travels with it
        model.train_config.save(out / TRAIN_CONFIG)
    if base_type == "source":
        shutil.copyfile(source, out / LLM_FILE)
    else:
        write_base(reader, arch, base_type, out / LLM_FILE)
    with torch.no_grad():
        alpha = write_lora(
            model, reader, arch, np.float32 if base_type == "f32" else np.float16, out / LORA_FILE
        )
    manifest = {
        "llm": LLM_FILE,
        "lora": LORA_FILE,
        "llm_type": base_type,
        "llm_source": str(source),
        "architecture": arch,
        "lora_alpha": alpha,
        "adapter": student.config.adapter,
        "stop_ids": sorted(model.stop_ids),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
