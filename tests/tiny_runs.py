"""Tiny AuRA and bridge runs trained by the real `aura train` loop, shared by the eval and diagnose tests.

Everything is a folder, as in real use: a random Whisper with its own byte-level tokenizer (so the teacher
can transcribe and the cascade can run), the tiny random LLM, and two RUN_DIRs (AuRA distill stage with
heads.safetensors; bridge joint stage). Built once per test session (about 5 s on an idle machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm, build_tiny_tokenizer, make_manifest
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from aura.config import AuraConfig
from aura.train.trainer import train


@dataclass(frozen=True)
class TinyRuns:
    root: Path
    manifest: Path
    whisper: Path
    llm: Path
    aura: Path
    bridge: Path


_BUILT: dict[str, TinyRuns] = {}


def _tiny_whisper(folder: Path) -> None:
    """A 2-layer random Whisper over a 256-byte vocabulary that usually ends a transcript after one token.

    The decoder's final layer norm gets a constant bias and the end-of-text row of the (untied) output
    projection points along it: layer-norm output sums to zero, so that logit is 64 at every step and
    decoding stops right away instead of running to the 224-token cap. End-of-text is banned at the first
    step so transcripts are not empty.
    """
    special = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    tokenizer = WhisperTokenizer(vocab={c: i for i, c in enumerate(bytes_to_unicode().values())}, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": special[1:]})
    eot, sot, no_timestamps = tokenizer.convert_tokens_to_ids(special)
    torch.manual_seed(1)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        tie_word_embeddings=False,
        begin_suppress_tokens=[eot],
        suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.decoder.layer_norm.bias.fill_(1.0)
        model.proj_out.weight[eot] = 1.0
    model.generation_config.is_multilingual = False
    model.generation_config.no_timestamps_token_id = no_timestamps
    model.generation_config.begin_suppress_tokens = [eot]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def tiny_runs(factory: pytest.TempPathFactory) -> TinyRuns:
    if "runs" in _BUILT:
        return _BUILT["runs"]
    root = factory.mktemp("tiny_runs")
    manifest = make_manifest(root / "data", count=4)
    _tiny_whisper(root / "whisper")
    tokenizer = build_tiny_tokenizer()
    build_tiny_llm(tokenizer).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    for arch, stage in (("aura", "distill"), ("bridge", "joint")):
        config = AuraConfig()
        config.model.arch = arch
        config.model.llm, config.model.teacher = str(root / "llm"), str(root / "whisper")
        config.model.lora_layers, config.model.lora_rank, config.model.lora_alpha = 2, 4, 4
        config.data.train = str(manifest)
        config.train.stage, config.train.max_steps, config.train.batch_size = stage, 2, 2
        config.train.warmup_steps, config.train.save_every, config.train.log_every = 0, 2, 1
        config.distill.cache_dir = str(root / "teacher_cache")
        train(config, root / arch, progress=False)
    _BUILT["runs"] = TinyRuns(root, manifest, root / "whisper", root / "llm", root / "aura", root / "bridge")
    return _BUILT["runs"]
