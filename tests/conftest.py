"""Shared fixtures: a tiny random Whisper teacher, a tiny random LLM with a real chat-template tokenizer,
and a tiny manifest of synthesized clips. Everything is offline, deterministic and fast (< 2 s)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from aura.audio.features import SAMPLE_RATE
from aura.data.manifest import Example, write_manifest

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "one",
    "dog",
    "ran",
    "to",
    "the",
    "red",
    "house",
    "and",
    "two",
    "birds",
    "sang",
    "in",
    "green",
    "trees",
    "transcribe",
    "what",
    "you",
    "hear",
    "say",
    "it",
    "again",
    "please",
    "answer",
    "the",
    "question",
    "about",
    "this",
    "audio",
    "clip",
]
TOY_SENTENCES = [
    "the cat sat on a mat",
    "one dog ran to the red house",
    "two birds sang in green trees",
    "the red cat ran",
    "a dog sat in the house",
    "green birds sang",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few words, with ChatML special tokens and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(WORDS)] * 4 + TOY_SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_llm(
    tokenizer: PreTrainedTokenizerFast,
    *,
    layers: int = 4,
    seed: int = 0,
    max_positions: int = 512,
    initializer_range: float = 0.02,
) -> LlamaForCausalLM:
    """A random Llama (width 64, `layers` blocks) over the tiny tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def build_tiny_whisper() -> WhisperForConditionalGeneration:
    """A 2-layer random Whisper (width 64, 80 mels, full 1500-frame window)."""
    torch.manual_seed(1)
    config = WhisperConfig(
        vocab_size=128,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return WhisperForConditionalGeneration(config).eval()


def build_tiny_teacher():
    """`aura.teacher.whisper.Teacher` around the tiny random Whisper."""
    from aura.teacher.whisper import Teacher

    return Teacher(build_tiny_whisper(), name="tiny-random-whisper")


@pytest.fixture()
def one_thread():
    """Tiny models run ~10x faster on one thread on a busy machine (no OpenMP spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture()
def tiny_llm(tiny_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Fresh per test (training mutates it)."""
    return build_tiny_llm(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_whisper_model() -> WhisperForConditionalGeneration:
    return build_tiny_whisper()


@pytest.fixture(scope="session")
def tiny_teacher(tiny_whisper_model: WhisperForConditionalGeneration):
    """Frozen; safe to share across tests."""
    from aura.teacher.whisper import Teacher

    return Teacher(tiny_whisper_model, name="tiny-random-whisper")


def tone_clip(seconds: float, seed: int) -> np.ndarray:
    """A deterministic 'utterance': a few gliding harmonic tones with pauses, so clips differ in content."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    base = 120 + 80 * rng.random()
    glide = base * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
    phase = 2 * np.pi * np.cumsum(glide) / SAMPLE_RATE
    wave = sum(np.sin(h * phase) / h for h in range(1, 5))
    envelope = (np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t) > -0.3).astype(np.float64)
    wave = 0.3 * wave * envelope + 0.01 * rng.standard_normal(n)
    return wave.astype(np.float32)


def make_manifest(folder: Path, count: int = 6, seed: int = 0) -> Path:
    """Write `count` synthetic clips (0.6-1.8 s) with ASR-style prompts/responses and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for i in range(count):
        seconds = 0.6 + 1.2 * ((i * 7 + seed) % count) / max(count - 1, 1)
        wave = tone_clip(seconds, seed * 1000 + i)
        path = folder / f"clip{i}.wav"
        sf.write(path, wave, SAMPLE_RATE)
        sentence = TOY_SENTENCES[i % len(TOY_SENTENCES)]
        prompt = "transcribe what you hear <audio>" if i % 2 else ""
        examples.append(
            Example(
                id=f"clip{i}",
                audio=str(path),
                task="asr",
                prompt=prompt,
                response=sentence,
                transcript=sentence,
                duration=len(wave) / SAMPLE_RATE,
            )
        )
    return write_manifest(examples, folder / "train.jsonl")


@pytest.fixture()
def tiny_manifest(tmp_path: Path) -> Path:
    """Six short synthetic clips in a manifest (tone 'utterances', varied lengths and prompt layouts)."""
    return make_manifest(tmp_path / "data")


# ---------------------------------------------------------------- inference checkpoint (H4: infer/serve tests)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: PreTrainedTokenizerFast) -> Path:
    """RUN_DIR with `final/` written by `AuraStudent.save_pretrained`, as `aura train` leaves it.

    The random LLM is initialised wide (std 0.3) so greedy answers vary from token to token, and LoRA's
    B matrices are random rather than zero, so merged and unmerged paths really differ from the base
    LLM and a mistake in merging or adapter switching changes the answer.
    """
    from aura.config import ModelConfig
    from aura.model.student import AuraStudent

    root = tmp_path_factory.mktemp("aura_run")
    llm = build_tiny_llm(tiny_tokenizer, layers=3, seed=2, max_positions=2048, initializer_range=0.3)
    llm.save_pretrained(root / "base_llm")
    tiny_tokenizer.save_pretrained(root / "base_llm")
    model_config = ModelConfig(llm=str(root / "base_llm"), lora_layers=2, lora_rank=4, lora_alpha=4)
    student = AuraStudent.build(model_config, llm=llm, tokenizer=tiny_tokenizer)
    with torch.no_grad():
        for name, param in student.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    student.save_pretrained(root / "final")
    return root


@pytest.fixture(scope="session")
def chunked_run(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: PreTrainedTokenizerFast) -> Path:
    """RUN_DIR of a tiny checkpoint trained chunk-causal (chunks of 0.16 s = 2 audio tokens), random LoRA
    as in `tiny_run`, and an audio projection large enough that the audio decides the answer."""
    from aura.config import ModelConfig
    from aura.model.student import AuraStudent

    root = tmp_path_factory.mktemp("chunked_run")
    llm = build_tiny_llm(tiny_tokenizer, layers=3, seed=3, max_positions=2048, initializer_range=0.3)
    llm.save_pretrained(root / "base_llm")
    tiny_tokenizer.save_pretrained(root / "base_llm")
    config = ModelConfig(
        llm=str(root / "base_llm"),
        lora_layers=2,
        lora_rank=4,
        lora_alpha=4,
        audio_attention="chunk-causal",
        audio_chunk_seconds=0.16,
    )
    student = AuraStudent.build(config, llm=llm, tokenizer=tiny_tokenizer)
    with torch.no_grad():
        for name, param in student.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
        student.audio.proj.weight.normal_(0.0, 0.5)  # audio that matters to the answer
    student.save_pretrained(root / "final")
    return root


@contextlib.contextmanager
def aura_serve(*args: str, timeout: float = 120.0) -> Iterator[str]:
    """Run the real `aura serve` command on a free localhost port until /health answers; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(Path(sys.executable).parent / "aura"), "serve", *args, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "aura serve did not come up"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
