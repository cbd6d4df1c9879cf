"""CTranslate2 Whisper `model.bin` reader and converter to a transformers Whisper folder.

The only pretrained Whisper weights that install offline ship in CTranslate2 format, while AuRA needs
the encoder's hidden states from PyTorch. We read the binary format (version 6) directly with numpy,
so ctranslate2 itself is never needed at run time, and rebuild a `WhisperForConditionalGeneration`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

BINARY_VERSION = 6
# Type ids of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5


class CT2FormatError(ValueError):
    """A `model.bin` that is not a readable CTranslate2 (binary version 6) Whisper model."""


@dataclass(frozen=True)
class CT2Model:
    """Contents of a `model.bin`: weights dequantized to float32 (scalars keep their integer type),
    aliases resolved to the arrays they name, `<name>_scale` entries consumed."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


class _Cursor:
    """Sequential reader over the concatenated bytes, naming the source files in its errors."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def take(self, size: int, what: str) -> memoryview:
        if self.pos + size > len(self.data):
            raise CT2FormatError(
                f"{self.source}: file ends at byte {len(self.data)} while reading {what} "
                f"({size} bytes needed at offset {self.pos}). The file is truncated; if the model ships "
                "in several parts, pass all of them in order."
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        return bytes(self.take(length, what)).rstrip(b"\0").decode("utf-8")


def _to_float32(raw: np.ndarray, type_id: int) -> np.ndarray:
    if type_id == _BFLOAT16:
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def read_ct2(parts: Path | str | Sequence[Path | str]) -> CT2Model:
    """Read a CTranslate2 `model.bin` given as one file or as a list of parts forming one stream."""
    paths = [Path(parts)] if isinstance(parts, str | Path) else [Path(p) for p in parts]
    if not paths:
        raise CT2FormatError("no model.bin file given")
    for path in paths:
        if not path.is_file():
            raise CT2FormatError(
                f"{path}: no such file (expected a CTranslate2 model.bin or one of its parts)"
            )
    source = " + ".join(str(p) for p in paths)
    cur = _Cursor(b"".join(p.read_bytes() for p in paths), source)

    (version,) = cur.unpack("I", "the binary version")
    if version != BINARY_VERSION:
        raise CT2FormatError(
            f"{source}: binary version {version}, expected {BINARY_VERSION}. Not a CTranslate2 model.bin "
            "of a supported version, or its parts are out of order."
        )
    spec = cur.string("the spec name")
    (revision,) = cur.unpack("I", "the spec revision")
    raw = _read_variables(cur, source)
    (num_aliases,) = cur.unpack("I", "the number of aliases")
    aliases = {}
    for _ in range(num_aliases):
        alias = cur.string("an alias name")
        aliases[alias] = cur.string(f"the target of alias {alias}")
    if cur.pos != len(cur.data):
        raise CT2FormatError(f"{source}: {len(cur.data) - cur.pos} unexpected bytes after the aliases")
    variables = _dequantized(raw)
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{source}: alias {alias} points to missing variable {target}")
        variables[alias] = variables[target]
    return CT2Model(spec=spec, revision=revision, variables=variables)


def _read_variables(cur: _Cursor, source: str) -> dict[str, tuple[np.ndarray, int]]:
    """The stored variables as written: (array, CTranslate2 dtype id) by name."""
    (count,) = cur.unpack("I", "the number of variables")
    raw: dict[str, tuple[np.ndarray, int]] = {}
    for index in range(count):
        name = cur.string(f"the name of variable {index}")
        (rank,) = cur.unpack("B", f"the rank of {name}")
        shape = cur.unpack(f"{rank}I", f"the shape of {name}") if rank else ()
        type_id, nbytes = cur.unpack("BI", f"the dtype of {name}")
        if type_id not in _DTYPES:
            raise CT2FormatError(f"{source}: variable {name} has unknown dtype id {type_id}")
        dtype = _DTYPES[type_id]
        if nbytes != dtype.itemsize * int(np.prod(shape)):
            raise CT2FormatError(f"{source}: variable {name} of shape {shape} declares {nbytes} bytes")
        array = np.frombuffer(cur.take(nbytes, f"the data of {name}"), dtype=dtype).reshape(shape)
        raw[name] = (array, type_id)
    return raw


def _dequantized(raw: dict[str, tuple[np.ndarray, int]]) -> dict[str, np.ndarray]:
    """Float32 weights (int8 rows divided by their `_scale`); integer scalars kept as they are."""
    variables: dict[str, np.ndarray] = {}
    for name, (array, type_id) in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        if array.ndim == 0 and type_id not in (0, 4, _BFLOAT16):
            variables[name] = array.copy()
            continue
        value = _to_float32(array, type_id)
        scale = raw.get(name + "_scale")
        if scale is not None:
            # Quantized rows were multiplied by their scale (127 / row max); one scale per output row.
            factors = _to_float32(*scale)
            value = value / factors.reshape((-1,) + (1,) * (value.ndim - 1))
        variables[name] = value
    return variables


def _linear(state: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    state[f"{dst}.weight"] = torch.from_numpy(v[f"{src}/weight"])
    state[f"{dst}.bias"] = torch.from_numpy(v[f"{src}/bias"])


def _norm(state: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    state[f"{dst}.weight"] = torch.from_numpy(v[f"{src}/gamma"])
    state[f"{dst}.bias"] = torch.from_numpy(v[f"{src}/beta"])


def _split_rows(
    state: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dsts: Sequence[str], d: int
) -> None:
    """Split a fused projection into per-row-block HF projections. HF's key projection has no bias: a key
    bias adds the same q·b to every logit of a query, which softmax ignores, so dropping it is exact."""
    weight, bias = v[f"{src}/weight"], v[f"{src}/bias"]
    for i, dst in enumerate(dsts):
        state[f"{dst}.weight"] = torch.from_numpy(weight[i * d : (i + 1) * d])
        if not dst.endswith("k_proj"):
            state[f"{dst}.bias"] = torch.from_numpy(bias[i * d : (i + 1) * d])


def _count_layers(v: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return len({m.group(1) for name in v if (m := pattern.match(name))})


def _whisper_state_dict(v: dict[str, np.ndarray], d: int) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(state, v, f"encoder/{conv}", f"{enc}.{conv}")
    state[f"{enc}.embed_positions.weight"] = torch.from_numpy(v["encoder/position_encodings/encodings"])
    state[f"{dec}.embed_positions.weight"] = torch.from_numpy(v["decoder/position_encodings/encodings"])
    state[f"{dec}.embed_tokens.weight"] = torch.from_numpy(v["decoder/embeddings/weight"])
    state["proj_out.weight"] = torch.from_numpy(v["decoder/projection/weight"])
    for stack, prefix in (("encoder", enc), ("decoder", dec)):
        _norm(state, v, f"{stack}/layer_norm", f"{prefix}.layer_norm")
        for i in range(_count_layers(v, stack)):
            src, dst = f"{stack}/layer_{i}", f"{prefix}.layers.{i}"
            attn = f"{dst}.self_attn"
            _split_rows(state, v, f"{src}/self_attention/linear_0", [f"{attn}.{p}_proj" for p in "qkv"], d)
            _linear(state, v, f"{src}/self_attention/linear_1", f"{attn}.out_proj")
            _norm(state, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            _linear(state, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _linear(state, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
            _norm(state, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            if stack == "decoder":
                cross = f"{dst}.encoder_attn"
                _linear(state, v, f"{src}/attention/linear_0", f"{cross}.q_proj")
                _split_rows(state, v, f"{src}/attention/linear_1", [f"{cross}.k_proj", f"{cross}.v_proj"], d)
                _linear(state, v, f"{src}/attention/linear_2", f"{cross}.out_proj")
                _norm(state, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    return state


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CT2FormatError(f"{path}: missing; a CTranslate2 Whisper folder has {what} next to model.bin")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CT2FormatError(f"{path}: not valid JSON ({err})") from err


def _build_tokenizer(tokenizer_path: Path, vocab_size: int, first_timestamp: int):
    """HF Whisper tokenizer from CT2's tokenizer.json. Some CT2 exports lack the 1501 timestamp tokens
    (<|0.00|> … <|30.00|>) that fill the model's vocabulary; add them so ids and tokens line up as in HF."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    backend = Tokenizer.from_file(str(tokenizer_path))
    specials = [t.content for t in backend.get_added_tokens_decoder().values() if t.special]
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        tokenizer_object=backend,
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        extra_special_tokens=[s for s in specials if s != eot],
        model_max_length=448,
    )
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise CT2FormatError(
            f"{tokenizer_path}: {len(tokenizer)} tokens but the model's vocabulary has {vocab_size}; "
            "the tokenizer.json belongs to another model"
        )
    if missing and len(tokenizer) == first_timestamp:
        stamps = [f"<|{(i * 0.02):.2f}|>" for i in range(missing)]
        tokenizer.add_tokens([AddedToken(s, special=False, normalized=False) for s in stamps])
    return tokenizer


def ct2_to_whisper(model_bin_parts: Sequence[Path], ct2_dir: Path, out_dir: Path) -> None:
    """Convert a CTranslate2 Whisper model into a transformers `WhisperForConditionalGeneration` folder
    (float32 safetensors, generation config, tokenizer, feature extractor).

    `model_bin_parts` are the pieces of `model.bin` in order (one path for an unsplit file); `ct2_dir`
    holds CT2's `config.json` and `tokenizer.json`. The folder is written to a temporary sibling and
    renamed at the end, so an interrupted conversion never leaves a half-written `out_dir`.
    """
    from transformers import WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir}: already exists and is not an empty folder; remove it or pick another"
        )
    ct2_config = _read_json(ct2_dir / "config.json", "config.json")
    tokenizer_json = _read_json(ct2_dir / "tokenizer.json", "tokenizer.json")
    model = read_ct2(model_bin_parts)
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"{model_bin_parts[0]}: a CTranslate2 {model.spec} model, not a Whisper model")
    v = model.variables
    token_ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    needed = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>"]
    if missing := [t for t in needed if t not in token_ids]:
        raise CT2FormatError(f"{ct2_dir / 'tokenizer.json'}: no Whisper special tokens {missing}")
    try:  # a file that claims WhisperSpec but lacks a variable is damaged
        config = _whisper_config(v, ct2_config, token_ids)
        state = _whisper_state_dict(v, config.d_model)
    except KeyError as err:
        raise CT2FormatError(f"{model_bin_parts[0]}: Whisper variable {err} is missing") from err
    hf_model = WhisperForConditionalGeneration(config)
    hf_model.load_state_dict(state, strict=True)
    hf_model.generation_config = _generation_config(config, ct2_config, token_ids)
    no_timestamps = token_ids["<|notimestamps|>"]
    tokenizer = _build_tokenizer(ct2_dir / "tokenizer.json", config.vocab_size, no_timestamps + 1)
    _write_folder(out_dir, hf_model, tokenizer, config.num_mel_bins)


def _whisper_config(v: dict[str, np.ndarray], ct2_config: dict, token_ids: dict[str, int]) -> Any:
    """The transformers `WhisperConfig` the variables' shapes and CT2's config describe."""
    from transformers import WhisperConfig

    eot, sot = token_ids["<|endoftext|>"], token_ids["<|startoftranscript|>"]
    d, n_mels, _ = v["encoder/conv1/weight"].shape
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=n_mels,
        d_model=d,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        tie_word_embeddings=bool(
            np.array_equal(v["decoder/embeddings/weight"], v["decoder/projection/weight"])
        ),
    )


def _generation_config(config: Any, ct2_config: dict, token_ids: dict[str, int]) -> Any:
    """Whisper's generation settings (special tokens, suppression, languages for a multilingual model)."""
    from transformers import GenerationConfig

    eot, sot = token_ids["<|endoftext|>"], token_ids["<|startoftranscript|>"]
    # OpenAI's convention (also HF's): English-only checkpoints have 51864 tokens, multilingual ≥ 51865.
    multilingual = config.vocab_size >= 51865
    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        alignment_heads=ct2_config.get("alignment_heads", []),
        no_timestamps_token_id=token_ids["<|notimestamps|>"],
        prev_sot_token_id=token_ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        id_to_token = {i: t for t, i in token_ids.items()}
        generation.lang_to_id = {
            id_to_token[i]: i for i in ct2_config.get("lang_ids", []) if i in id_to_token
        }
        generation.task_to_id = {task: token_ids[f"<|{task}|>"] for task in ("transcribe", "translate")}
    # transformers 5 regenerates a generation config that is marked as derived from the model config,
    # dropping lang_to_id & co, so generate(language="en") would fail after reloading.
    generation._from_model_config = False
    return generation


def _write_folder(out_dir: Path, hf_model: Any, tokenizer: Any, n_mels: int) -> None:
    """Model, tokenizer and feature extractor into a temporary sibling of `out_dir`, renamed when whole."""
    from transformers import WhisperFeatureExtractor

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        tmp.chmod(0o755)
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Saved on its own (not via WhisperProcessor, which folds it into processor_config.json) so that
        # WhisperFeatureExtractor.from_pretrained finds the usual preprocessor_config.json.
        WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
