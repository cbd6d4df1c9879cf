"""Decoding for AuRA checkpoints: requests, their validation, and the token loop over a KV cache.

The prompt goes through the LLM once as `inputs_embeds` with the student's 4-D mask (bidirectional
inside audio spans, causal elsewhere, padding masked), then each new token is fed as an id against the
cached keys/values. transformers' own `generate` is not used because it rebuilds a causal mask from
the 2-D padding mask and would lose the bidirectional audio spans. Greedy unless a request samples.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from aura.compat import CACHE_KWARG
from aura.model.audio_expert import AudioExpert
from aura.model.batching import StudentBatch

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


class RequestError(ValueError):
    """A request that cannot run, naming the field at fault (the server answers it with a 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# the dtypes a checkpoint can be loaded in, by the names `--dtype` takes
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """`--dtype NAME` -> torch dtype; an unknown name is a ValueError listing the choices."""
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]


@dataclass
class GenerationRequest:
    """One conversation to continue: chat turns whose text holds one `<audio>` per entry of `audio`."""

    messages: list[dict[str, str]]
    audio: list[np.ndarray] = field(default_factory=list)
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy (deterministic)
    top_p: float = 1.0
    seed: int | None = None

    def validate(self) -> None:
        """Raise `RequestError` naming the first field out of range: checked before a request joins a
        batch, so one bad value fails only its own request."""

        def bad(name: str, why: str) -> RequestError:
            return RequestError(name, f"{name} {why}")

        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise bad("max_new_tokens", f"must be an integer, got {self.max_new_tokens!r}.")
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens", f"must be at least 1, got {self.max_new_tokens}.")
        if not (isinstance(self.temperature, int | float) and 0 <= self.temperature < math.inf):
            raise bad("temperature", f"must be a finite number >= 0 (0 = greedy), got {self.temperature!r}.")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise bad("top_p", f"must be in (0, 1], got {self.top_p!r}.")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not SEED_MIN <= self.seed <= SEED_MAX
        ):
            raise bad("seed", f"must be an integer from {SEED_MIN} to {SEED_MAX}, got {self.seed!r}.")
        for i, message in enumerate(self.messages):
            if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                raise bad(f"messages[{i}]", "needs a string `role` and a string `content`.")
        for i, wave in enumerate(self.audio):
            if not isinstance(wave, np.ndarray) or wave.ndim != 1 or wave.size == 0:
                raise bad(f"audio[{i}]", "must be a non-empty 1-D 16-kHz float waveform.")


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens reached)


class Row:
    """Per-row decoding state: tokens so far and how much of their text was already handed out."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, request: GenerationRequest, device: torch.device):
        self.tokenizer, self.request = tokenizer, request
        self.tokens: list[int] = []
        self.emitted = ""
        self.finish: str | None = None
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(request.seed if request.seed is not None else random.getrandbits(63))

    def text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def add(self, token: int, stop_ids: set[int]) -> str:
        """Take the next token (a stop token, or reaching max_new_tokens, ends the row); the text it adds."""
        if token in stop_ids:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            if len(self.tokens) >= self.request.max_new_tokens:
                self.finish = "length"
        return self.new_text(final=self.finish is not None)

    def new_text(self, final: bool) -> str:
        """Text not yet handed out; a trailing partial UTF-8 character waits for its next token."""
        text = self.text()
        if not final and text.endswith("\ufffd"):
            return ""
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return piece


def sample(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else nucleus sampling with the row's generator."""
    chosen = logits.argmax(-1)
    for i, row in enumerate(rows):
        temperature, top_p = row.request.temperature, row.request.top_p
        if temperature <= 0:
            continue
        probs = torch.softmax(logits[i].float() / temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        pick = torch.multinomial(sorted_probs, 1, generator=row.generator)
        chosen[i] = order[pick[0]]
    return chosen


@dataclass
class PromptState:
    """A prompt already run through the LLM, what decoding continues from: its KV cache, the next-token
    logits `(B, vocab)`, each row's next position `(B,)`, which cached positions are real `(B, T)`, the
    prompt lengths and the dtype of the attention masks."""

    cache: DynamicCache
    logits: torch.Tensor
    position: torch.Tensor
    valid: torch.Tensor
    lengths: list[int]
    dtype: torch.dtype


class Decoding:
    """One batch being generated: iterate it for `(row, text piece)` as tokens arrive, then `results()`.

    The prompt runs once, then one token per step for the whole batch until every row stops. Rows that
    finish early keep their slot (their outputs are ignored): the cache is one tensor per layer, and
    shrinking it would cost more than the few wasted positions. Iterating in the caller's thread is what
    lets a caller time the first token. `prefill` is the prompt batch, or a `PromptState` for a prompt
    already in the cache (a stream's, `aura.infer.streaming`).
    """

    def __init__(
        self,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prefill: StudentBatch | PromptState,
        requests: list[GenerationRequest],
        stop_ids: set[int],
        on_finish: Callable[[int], None] | None = None,
        expert: AudioExpert | None = None,
    ) -> None:
        self.llm, self.prefill, self.stop_ids, self.requests = llm, prefill, stop_ids, requests
        # audio-expert adapters act in the prompt's audio positions; every generated token is text
        self.expert = expert
        self.rows = [Row(tokenizer, request, prefill.valid.device) for request in requests]
        self.on_finish = on_finish  # called with the row index as soon as that row is complete

    def cancel(self, row: int) -> None:
        """Stop generating for `row` (its client went away); the rest of the batch carries on."""
        self.rows[row].finish = self.rows[row].finish or "stop"

    def _run_prompt(self, prefill: StudentBatch) -> PromptState:
        device = prefill.embeds.device
        index = torch.arange(len(self.rows), device=device)
        # a plain cache keeps every layer's full keys/values: the custom 4-D masks span the whole
        # sequence, which a sliding-window cache layer (Gemma 3) would cut short
        cache = DynamicCache()
        # the next-token logits sit at each row's last real token (rows may be right-padded); the LM head
        # runs on those positions only: over the whole prompt it would cost a fifth of a 135M model's prefill
        last = torch.tensor([n - 1 for n in prefill.lengths], device=device)
        keep = torch.unique(last)  # sorted
        with self.expert.at(prefill.audio_mask) if self.expert else contextlib.nullcontext():
            out = self.llm(
                inputs_embeds=prefill.embeds,
                attention_mask=prefill.mask,
                position_ids=prefill.positions,
                **{CACHE_KWARG: cache},
                use_cache=True,
                logits_to_keep=keep,
            )
        logits = out.logits[index, torch.searchsorted(keep, last)]
        position = prefill.positions[index, last] + 1
        return PromptState(cache, logits, position, prefill.valid, prefill.lengths, prefill.mask.dtype)

    @torch.inference_mode()
    def __iter__(self) -> Iterator[tuple[int, str]]:
        rows, llm = self.rows, self.llm
        state = self.prefill if isinstance(self.prefill, PromptState) else self._run_prompt(self.prefill)
        cache, logits, position, valid = state.cache, state.logits, state.position, state.valid
        device = valid.device
        batch = len(rows)
        neg = torch.finfo(state.dtype).min
        for _ in range(max(row.request.max_new_tokens for row in rows)):
            tokens = sample(logits, rows)
            for i, row in enumerate(rows):
                if row.finish is not None:
                    continue
                piece = row.add(int(tokens[i]), self.stop_ids)
                if piece:
                    yield i, piece
                if row.finish is not None and self.on_finish is not None:
                    self.on_finish(i)
            if all(row.finish is not None for row in rows):
                return
            valid = torch.cat([valid, torch.ones(batch, 1, dtype=torch.bool, device=device)], dim=1)
            mask = torch.zeros(batch, 1, 1, valid.shape[1], dtype=state.dtype, device=device)
            mask.masked_fill_(~valid[:, None, None, :], neg)
            with self.expert.at(None) if self.expert else contextlib.nullcontext():
                out = llm(
                    input_ids=tokens[:, None],
                    attention_mask=mask,
                    position_ids=position[:, None],
                    **{CACHE_KWARG: cache},
                    use_cache=True,
                )
            logits = out.logits[:, -1]
            position = position + 1

    def result(self, row: int) -> GenerationResult:
        state = self.rows[row]
        return GenerationResult(
            text=state.text(),
            prompt_tokens=self.prefill.lengths[row],
            completion_tokens=len(state.tokens),
            finish_reason=state.finish or "length",
        )

    def results(self) -> list[GenerationResult]:
        return [self.result(row) for row in range(len(self.rows))]


def stop_token_ids(llm: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """End-of-sequence and end-of-turn ids: the tokenizer's, the generation config's (when there is an
    LLM object, not only a GGUF file) and the chat end token."""
    ids: set[int] = set()
    config = getattr(llm, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return ids


def reference_answers(
    llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], max_new_tokens: int
) -> list[tuple[str, int]]:
    """(text, token count) of `llm` answering each one-turn chat question greedily through plain
    transformers' `generate` and the same chat template: what a request without audio, which runs the
    exact base LLM, must answer (`aura serve`, `benchmarks/merge.py`)."""
    stops = stop_token_ids(llm, tokenizer)
    answers = []
    for question in questions:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out = llm.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stops))
        tokens = [t for t in out[0, ids["input_ids"].shape[1] :].tolist() if t not in stops]
        answers.append((tokenizer.decode(tokens, skip_special_tokens=True), len(tokens)))
    return answers
