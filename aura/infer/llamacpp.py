"""`--backend llama.cpp`: an `aura export --format gguf` folder answered by llama.cpp (llama-cpp-python's
low-level API) instead of torch.

The prompt is the torch backend's own: the same chat template, tokenizer, system prompt and 30-s audio
windows (`ChatModel`), and the audio embeddings come from the same embedding layer (torch, small). One
request is one sequence in llama.cpp's KV cache, fed in the order of the prompt:

- text before the audio as token ids, causal attention;
- each audio window as one `llama_batch` of embeddings (`embd`), decoded with
  `llama_set_causal_attn(ctx, False)`: every audio position attends to the text before it and to the
  whole window, which is the torch student's mask (causal, bidirectional inside each audio span);
- text after the audio and every generated token as ids, causal again.

llama.cpp masks by position within the sequence only when attention is causal, so a non-causal batch
sees all of the cache's cells of its sequence: the earlier text and windows and its own positions,
never later ones, as nothing later has been decoded yet. A non-causal batch must fit one micro-batch,
so the context's micro-batch holds a whole 30-s window.

Adapters follow the torch backend: plain LoRA is on for the whole of a request with audio and off for
text-only requests (the exact base LLM); audio-expert adapters (`model.adapter=audio-expert`) are on
only while the audio batches are decoded, so text positions run the base weights.

Requests run one after another (one sequence at a time): a batch from the server is answered row by
row, each row's result handed out as soon as it is complete.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

from aura.audio.features import WINDOW_SAMPLES, AudioSource, encoder_frames, log_mel
from aura.config import AuraConfig, load_config
from aura.infer.chat import ChatModel, OnDone, OnText, Requests
from aura.infer.decoding import GenerationRequest, GenerationResult, Row, sample
from aura.infer.gguf_export import MANIFEST
from aura.model.checkpoint import CONFIG_FILE, EMBEDDING_FILE, TRAIN_CONFIG, checkpoint_folder
from aura.model.embedding import AudioEmbedding

INSTALL_HINT = (
    "--backend llama.cpp needs llama-cpp-python: run `bash scripts/setup.sh` (it builds llama-cpp-python "
    "once for this CPU and caches the wheel) or `pip install 'aura-speech[llamacpp]'`."
)
CONTEXT_TOKENS = 4096  # llama.cpp context (prompt + answer) unless the LLM's own window is shorter


class BackendError(ValueError):
    """A model the llama.cpp backend cannot run (missing package, not a GGUF export); says what to do."""


def llama_cpp_module() -> ModuleType:
    """llama-cpp-python's low-level bindings, with llama.cpp's own logging down to errors."""
    try:
        import llama_cpp
    except ImportError as err:
        raise BackendError(INSTALL_HINT) from err
    # llama-cpp-python's log callback prints whatever its logger's level lets through (all by default)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


class LlamaCppModel(ChatModel):
    """An `aura export --format gguf` folder ready to answer, with the `AuraModel` interface a server
    and the CLI use (`request`, `generate`, `stream`, `run_batch`, `check`)."""

    def __init__(
        self, folder: Path, threads: int | None = None, context_tokens: int = CONTEXT_TOKENS
    ) -> None:
        lib = llama_cpp_module()
        manifest = json.loads((folder / MANIFEST).read_text())
        meta = yaml.safe_load((folder / CONFIG_FILE).read_text())
        config = AuraConfig.from_dict({"model": meta["model"]}, source=str(folder / CONFIG_FILE)).model
        train_config = load_config(folder / TRAIN_CONFIG) if (folder / TRAIN_CONFIG).is_file() else None
        self.name = folder.name
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.system_prompt = train_config.data.system_prompt if train_config is not None else None
        self.audio_stride, self.n_mels = config.k, meta["n_mels"]
        self.expert = config.adapter == "audio-expert"
        self.stop_ids = set(manifest["stop_ids"])
        self.audio = AudioEmbedding(**meta["audio"])
        self.audio.load_state_dict(load_file(folder / EMBEDDING_FILE))
        self.audio.eval()
        self.lib = lib
        self._running = threading.RLock()  # one context, one request at a time

        threads = threads or torch.get_num_threads()
        lib.llama_backend_init()
        self.llama = lib.llama_model_load_from_file(
            str(folder / manifest["llm"]).encode(), lib.llama_model_default_params()
        )
        if not self.llama:
            raise BackendError(f"{folder / manifest['llm']}: llama.cpp could not load this GGUF.")
        params = lib.llama_context_default_params()
        params.n_ctx = min(context_tokens, lib.llama_model_n_ctx_train(self.llama))
        # a non-causal batch has to be one micro-batch: room for a whole 30-s audio window
        params.n_batch = params.n_ubatch = max(512, math.ceil(encoder_frames(WINDOW_SAMPLES) / config.k))
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.llama, params)
        # freed at exit while the modules llama-cpp-python needs still exist
        weakref.finalize(self, _free, lib, self.ctx, self.llama)
        if not self.ctx:
            raise BackendError(f"{folder}: llama.cpp could not create a context of {params.n_ctx} tokens.")
        self.context_length = lib.llama_n_ctx(self.ctx)
        self.batch_size = params.n_batch
        self.width = lib.llama_model_n_embd(self.llama)
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.llama))
        adapter = lib.llama_adapter_lora_init(self.llama, str(folder / manifest["lora"]).encode())
        if not adapter:
            raise BackendError(f"{folder / manifest['lora']}: llama.cpp could not load this LoRA adapter.")
        self._adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        self._scales = (ctypes.c_float * 1)(1.0)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, threads: int | None = None, context_tokens: int = CONTEXT_TOKENS
    ) -> LlamaCppModel:
        """Load a folder written by `aura export --format gguf` (`threads`: llama.cpp's CPU threads,
        default torch's)."""
        folder = checkpoint_folder(name_or_path)
        if not (folder / MANIFEST).is_file():
            raise BackendError(
                f"{name_or_path}: not a llama.cpp export (no {MANIFEST} in {folder}); write one with "
                f"`aura export --format gguf --model {name_or_path} --out DIR`, then give --model DIR."
            )
        return cls(folder, threads=threads, context_tokens=context_tokens)

    # ---------------------------------------------------------------- llama.cpp calls
    def _adapter(self, on: bool) -> None:
        if on:
            self.lib.llama_set_adapters_lora(self.ctx, self._adapters, 1, self._scales)
        else:
            self.lib.llama_set_adapters_lora(self.ctx, None, 0, None)

    def _decode(
        self, start: int, ids: Sequence[int] = (), embeds: np.ndarray | None = None, logits: bool = False
    ) -> int:
        """Decode token `ids` (causal) or audio `embeds` (one non-causal batch) at positions from
        `start`; with `logits`, keep the last position's logits. Returns the next free position."""
        lib = self.lib
        count = len(ids) if embeds is None else embeds.shape[0]
        batch = lib.llama_batch_init(count, 0 if embeds is None else self.width, 1)
        try:
            batch.n_tokens = count
            if embeds is not None:
                values = np.ascontiguousarray(embeds, dtype=np.float32)
                ctypes.memmove(batch.embd, values.ctypes.data, values.nbytes)
            for i in range(count):
                if embeds is None:
                    batch.token[i] = ids[i]
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = logits and i == count - 1
            if embeds is not None:
                lib.llama_set_causal_attn(self.ctx, False)
            try:
                status = lib.llama_decode(self.ctx, batch)
            finally:
                if embeds is not None:
                    lib.llama_set_causal_attn(self.ctx, True)
        finally:
            lib.llama_batch_free(batch)
        if status != 0:
            raise RuntimeError(
                f"llama_decode failed with status {status} at position {start} ({count} inputs)."
            )
        return start + count

    def _logits(self) -> torch.Tensor:
        values = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.vocab,))
        return torch.from_numpy(values.copy())[None]

    # ---------------------------------------------------------------- requests
    def _prefill(self, request: GenerationRequest) -> int:
        """Run the prompt through a fresh KV cache; returns its length (the next position)."""
        texts, windows = self._layout(request)
        with torch.inference_mode():
            mels = [log_mel(window, n_mels=self.n_mels, pad_to_30s=False) for window in windows]
            embeds = [e.float().numpy() for e in self.audio.embed_clips(mels)] if mels else []
        segments: list[tuple[list[int], np.ndarray | None]] = []
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            segments += [(ids[s : s + self.batch_size], None) for s in range(0, len(ids), self.batch_size)]
            if i < len(embeds):
                segments.append(([], embeds[i]))
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self._adapter(bool(windows) and not self.expert)
        position = 0
        for i, (ids, audio) in enumerate(segments):
            last = i == len(segments) - 1
            if audio is not None and self.expert:
                self._adapter(True)
            position = self._decode(position, ids, audio, logits=last)
            if audio is not None and self.expert:
                self._adapter(False)
        return position

    def _pieces(self, request: GenerationRequest, row: Row) -> Iterator[str]:
        """Yield the answer's text pieces for one request, filling `row` (tokens, finish reason)."""
        position = self._prefill(request)
        while True:
            token = int(sample(self._logits(), [row])[0])
            piece = row.add(token, self.stop_ids)
            if piece:
                yield piece
            if row.finish is not None:
                return
            position = self._decode(position, [token], logits=True)

    def stream(
        self,
        audio: AudioSource | Sequence[AudioSource] | None = None,
        prompt: str | None = None,
        **options: object,
    ) -> Iterator[str]:
        request = self.request(audio, prompt, **options)  # type: ignore[arg-type]
        self.check(request)
        with self._running:
            yield from self._pieces(request, Row(self.tokenizer, request, torch.device("cpu")))

    def run_batch(
        self, requests: Requests, on_text: OnText | None = None, on_done: OnDone | None = None
    ) -> list[GenerationResult]:
        """Answer the requests one after another (see the module docstring); a request with a value out
        of range or over the context raises before any model work."""
        prompt_tokens = [self.check(request) for request in requests]
        results = []
        with self._running:
            for index, request in enumerate(requests):
                row = Row(self.tokenizer, request, torch.device("cpu"))
                for piece in self._pieces(request, row):
                    if on_text is not None and not on_text(index, piece):
                        row.finish = "stop"
                        break
                result = GenerationResult(
                    row.text(), prompt_tokens[index], len(row.tokens), row.finish or "length"
                )
                if on_done is not None:
                    on_done(index, result)
                results.append(result)
        return results


def _free(lib: Any, ctx: Any, llama: Any) -> None:
    if ctx:
        lib.llama_free(ctx)
    if llama:
        lib.llama_model_free(llama)
