"""CTranslate2 reader and converter: a tiny random Whisper goes through ctranslate2's own converter
(float16, int8 with per-row scales, float32) and must come back with its weights; the packaged tiny.en
must encode like ctranslate2 itself."""

from __future__ import annotations

import time
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from aura.convert.ct2 import CT2FormatError, ct2_to_whisper, read_ct2
from aura.registry import MODELS

SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
TIMESTAMP_SLOTS = 8


def make_tiny_whisper_folder(folder: Path) -> WhisperForConditionalGeneration:
    """Save a 2+2-layer random English-only Whisper (width 32) with a byte-level Whisper tokenizer whose
    special tokens sit after the 256 byte tokens, like OpenAI's; the vocabulary leaves room for a few
    timestamp tokens that the tokenizer lacks (as in some CT2 exports)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    eot = SPECIALS[0]
    tokenizer = WhisperTokenizer(
        tokenizer_object=backend,
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        extra_special_tokens=SPECIALS[1:],
    )
    ids = dict(zip(SPECIALS, tokenizer.convert_tokens_to_ids(SPECIALS), strict=True))
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=len(tokenizer) + TIMESTAMP_SLOTS,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=32,
        bos_token_id=ids[eot],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # make every tensor distinct (fresh layer norms are all ones/zeros)
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        suppress_tokens=[1, 2, 7],
        begin_suppress_tokens=[220, ids[eot]],
        alignment_heads=[[1, 0], [1, 3]],
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[WhisperForConditionalGeneration, Path]:
    folder = tmp_path_factory.mktemp("hf-source")
    return make_tiny_whisper_folder(folder), folder


def _ct2_export(source_dir: Path, out: Path, quantization: str) -> Path:
    """ctranslate2's own converter: an independent writer of the format under test."""
    converter = ctranslate2.converters.TransformersConverter(str(source_dir), copy_files=["tokenizer.json"])
    converter.convert(str(out), quantization=quantization)
    return out


@pytest.mark.parametrize("quantization", ["float16", "int8", "float32"])
def test_round_trip_recovers_the_weights(
    source: tuple[WhisperForConditionalGeneration, Path], tmp_path: Path, quantization: str
) -> None:
    original, source_dir = source
    ct2_dir = _ct2_export(source_dir, tmp_path / "ct2", quantization)
    ct2_to_whisper([ct2_dir / "model.bin"], ct2_dir, tmp_path / "hf")
    converted = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert converted.dtype == torch.float32

    ours, theirs = converted.state_dict(), original.state_dict()
    assert ours.keys() == theirs.keys()
    for name, want in theirs.items():
        got = ours[name]
        if quantization == "float16":
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6, msg=name)
        elif quantization == "int8" and want.ndim >= 2 and "embed_positions" not in name:
            # int8 rows are rounded at a step of (row max / 127): at most half a step off
            row_max = want.abs().reshape(want.shape[0], -1).amax(dim=1)
            step = (row_max / 127).reshape((-1,) + (1,) * (want.ndim - 1))
            assert ((got - want).abs() <= step / 2 + 1e-7).all(), name
            assert not torch.equal(got, want), f"{name} was expected to be quantized"
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_converted_folder_is_a_complete_whisper(
    source: tuple[WhisperForConditionalGeneration, Path], tmp_path: Path
) -> None:
    original, source_dir = source
    ct2_dir = _ct2_export(source_dir, tmp_path / "ct2", "float16")
    out = tmp_path / "hf"
    ct2_to_whisper([ct2_dir / "model.bin"], ct2_dir, out)
    model = WhisperForConditionalGeneration.from_pretrained(out)

    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "encoder_ffn_dim"):
        assert getattr(model.config, key) == getattr(original.config, key), key
    assert model.config.vocab_size == original.config.vocab_size
    assert model.config.max_target_positions == 32 and model.config.num_mel_bins == 80

    gen = model.generation_config
    eot, sot, no_ts = 256, 257, 256 + SPECIALS.index("<|notimestamps|>")
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id) == (sot, eot, eot)
    assert gen.suppress_tokens == [1, 2, 7] and gen.begin_suppress_tokens == [220, eot]
    assert gen.no_timestamps_token_id == no_ts and gen.is_multilingual is False
    assert gen.alignment_heads == [[1, 0], [1, 3]]

    processor = WhisperProcessor.from_pretrained(out)
    assert processor.feature_extractor.feature_size == 80
    tokenizer = processor.tokenizer
    assert len(tokenizer) == model.config.vocab_size  # timestamp tokens filled in
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == no_ts + 1
    ids = tokenizer("hi there").input_ids
    assert ids[:2] == [sot, no_ts] and ids[-1] == eot
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hi there"

    mel = torch.randn(1, 80, 3000)
    generated = model.generate(mel, max_new_tokens=4)
    assert generated.shape[0] == 1 and generated.shape[1] <= 4 + 2


def test_parts_are_one_stream_and_bad_files_are_named(
    source: tuple[WhisperForConditionalGeneration, Path], tmp_path: Path
) -> None:
    ct2_dir = _ct2_export(source[1], tmp_path / "ct2", "int8")
    data = (ct2_dir / "model.bin").read_bytes()
    part1, part2 = tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"
    part1.write_bytes(data[: len(data) // 3])
    part2.write_bytes(data[len(data) // 3 :])

    whole, split = read_ct2(ct2_dir / "model.bin"), read_ct2([part1, part2])
    assert whole.spec == split.spec == "WhisperSpec" and whole.revision == 3
    assert whole.variables.keys() == split.variables.keys()
    for name, value in whole.variables.items():
        np.testing.assert_array_equal(split.variables[name], value)
    assert not any(name.endswith("_scale") for name in whole.variables)
    assert "decoder/projection/weight" in whole.variables  # alias of the tied embeddings, resolved

    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2([part1])
    with pytest.raises(CT2FormatError, match="binary version"):
        read_ct2([part2, part1])
    with pytest.raises(CT2FormatError, match="no such file"):
        read_ct2(tmp_path / "missing.bin")

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        ct2_to_whisper([ct2_dir / "model.bin"], ct2_dir, tmp_path / "busy")
    (ct2_dir / "tokenizer.json").unlink()
    with pytest.raises(CT2FormatError, match="tokenizer.json"):
        ct2_to_whisper([ct2_dir / "model.bin"], ct2_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.real
def test_real_tiny_en_encoder_matches_ctranslate2(tmp_path: Path) -> None:
    parts = MODELS["whisper-tiny.en"].part_paths()
    if not parts:
        pytest.skip("whisper-tiny.en is not installed (aura models --install whisper-tiny.en)")
    start = time.perf_counter()
    ct2_to_whisper(parts, parts[0].parent, tmp_path / "tiny.en")
    print(f"tiny.en conversion: {time.perf_counter() - start:.1f} s")
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "tiny.en").eval()

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.2 * t)) + 0.02 * rng.standard_normal(t.size)).astype(
        "f4"
    )
    from aura.audio.features import log_mel

    mel = log_mel(wave)[None]
    with torch.no_grad():
        ours = model.model.encoder(mel).last_hidden_state.numpy()
    oracle = ctranslate2.models.Whisper(str(parts[0].parent), device="cpu", compute_type="float32")
    theirs = np.asarray(oracle.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    assert theirs.shape == ours.shape == (1, 1500, 384)
    assert np.abs(ours - theirs).max() < 1e-3
