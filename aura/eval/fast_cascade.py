"""`cascade-fast`: the cascade people run on a CPU, faster-whisper (CTranslate2, int8) then llama.cpp (GGUF).

It reads the very files the registry installs: the CTranslate2 Whisper folder the teacher is converted
from, and the GGUF the student LLM is dequantized from (`aura.registry.native_files`). The prompt is the
torch systems' own: rendered with the LLM's chat template (and its default system prompt) and tokenized
by its Hugging Face tokenizer exactly as `aura.eval.systems.ChatLLM` does, and the token ids go to llama.cpp;
decoding is greedy without repetition penalty, and the answer is detokenized and stopped the way
`aura.infer.decoding.Decoding` does it. So this system differs from `cascade` only in the two runtimes.

llama-cpp-python's `Llama` keeps the previous prompt's KV cache and reuses its longest common prefix with
the next prompt; every request resets it first, so each answer pays its whole prefill, as a new spoken
question does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aura.eval.items import ASR_TASK, EvalError, EvalItem
from aura.eval.systems import System, chat_prompt_ids
from aura.infer.decoding import GenerationRequest, Row, stop_token_ids
from aura.registry import MODELS, native_files, resolve_model

INSTALL_HINT = (
    "the `cascade-fast` system needs faster-whisper and llama-cpp-python: run `bash scripts/setup.sh` "
    "(it builds llama-cpp-python once and caches the wheel) or `pip install 'aura-speech[cascade-fast]'`."
)
CONTEXT_TOKENS = 4096  # llama.cpp context: prompt + answer; SmolLM2's window is 8192


def _registry_name(name: str, fmt: str, role: str) -> str:
    spec = MODELS.get(name)
    if spec is None or spec.fmt != fmt:
        raise EvalError(
            f"`cascade-fast` runs the registry's {fmt} files; {name!r} is not a registry {role} in that "
            f"format (choose from {', '.join(s.name for s in MODELS.values() if s.fmt == fmt)})."
        )
    return name


class FastWhisper:
    """faster-whisper on the registry's CTranslate2 Whisper, int8 weights, greedy, no timestamps."""

    def __init__(self, name: str, threads: int | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise EvalError(INSTALL_HINT) from err
        folder = native_files(_registry_name(name, "ct2-whisper", "teacher"))
        threads = threads or torch.get_num_threads()
        self.model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)
        self.english_only = name.endswith(".en")

    def transcribe(self, wave: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            wave,
            language=None if self.english_only else "en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


class LlamaCppChat:
    """llama.cpp on the registry's GGUF, fed the token ids of the torch systems' chat prompt."""

    def __init__(
        self,
        name: str,
        max_new_tokens: int = 64,
        threads: int | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise EvalError(INSTALL_HINT) from err
        gguf = native_files(_registry_name(name, "gguf", "student LLM"))
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_model(name))
        threads = threads or torch.get_num_threads()
        self.llama: Any = Llama(
            model_path=str(gguf),
            n_ctx=CONTEXT_TOKENS,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        # freed at exit while the modules `Llama.__del__` needs still exist (otherwise it raises at teardown)
        weakref.finalize(self, self.llama.close)
        self.max_new_tokens = max_new_tokens
        self.stop_ids = stop_token_ids(None, self.tokenizer)

    def stream(self, prompt: str) -> Iterator[str]:
        ids = chat_prompt_ids(self.tokenizer, prompt)
        row = Row(self.tokenizer, GenerationRequest(messages=[], max_new_tokens=self.max_new_tokens), "cpu")
        self.llama.reset()  # forget the previous prompt: no KV prefix reuse across requests
        for token in self.llama.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            piece = row.add(int(token), self.stop_ids)
            if piece:
                yield piece
            if row.finish is not None:
                return

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return ["".join(self.stream(prompt)) for prompt in prompts]


class FastCascadeSystem(System):
    """faster-whisper transcribes, llama.cpp answers from the transcript placed where the audio was."""

    name = "cascade-fast"
    skips = (ASR_TASK,)  # not an ASR system: its transcription is faster-whisper's

    def __init__(self, whisper: FastWhisper, llm: LlamaCppChat) -> None:
        self.whisper, self.llm = whisper, llm

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        return self.llm.generate([item.text_prompt(self.whisper.transcribe(item.wave)) for item in items])

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield from self.llm.stream(item.text_prompt(self.whisper.transcribe(item.wave)))
