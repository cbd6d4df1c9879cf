"""Inference over a trained AuRA checkpoint: batched generation with a KV cache, streaming, export.

Only the LLM (+ LoRA) and the audio embedding layer run here; the Whisper teacher is never loaded.
The prompt goes through the LLM once as `inputs_embeds` with the student's 4-D mask (bidirectional
inside audio spans, causal elsewhere, padding masked), then each new token is fed as an id against the
cached keys/values. transformers' own `generate` is not used because it rebuilds a causal mask from
the 2-D padding mask and would lose the bidirectional audio spans.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from aura import registry
from aura.audio.features import WINDOW_SAMPLES, AudioSource, encoder_frames, load_audio
from aura.config import AuraConfig, load_config
from aura.data.tasks import ASR_PROMPTS
from aura.model.audio_expert import AudioExpert
from aura.model.embedding import AudioEmbedding
from aura.model.llm import CACHE_KWARG, load_llm
from aura.model.student import (
    AUDIO_PLACEHOLDER,
    CONFIG_FILE,
    EMBEDDING_FILE,
    AuraStudent,
    CheckpointError,
    StudentBatch,
)

if TYPE_CHECKING:
    from aura.infer.streaming import StreamingSession

# the first of the prompts the ASR task trains on, so transcription requests look like training data
TRANSCRIBE_PROMPT = ASR_PROMPTS[0]
TRAIN_CONFIG = "config.yaml"  # the training config `aura train` writes into RUN_DIR
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


OnText = Callable[[int, str], bool]  # (row, new text) -> keep generating this row?


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


class _Row:
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

    def new_text(self, final: bool) -> str:
        """Text not yet handed out; a trailing partial UTF-8 character waits for its next token."""
        text = self.text()
        if not final and text.endswith("\ufffd"):
            return ""
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return piece


def _sample(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
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
        self.rows = [_Row(tokenizer, request, prefill.valid.device) for request in requests]
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
            tokens = _sample(logits, rows)
            for i, row in enumerate(rows):
                if row.finish is not None:
                    continue
                token = int(tokens[i])
                if token in self.stop_ids:
                    row.finish = "stop"
                else:
                    row.tokens.append(token)
                    if len(row.tokens) >= row.request.max_new_tokens:
                        row.finish = "length"
                piece = row.new_text(final=row.finish is not None)
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


def checkpoint_folder(name_or_path: str | Path) -> Path:
    """A folder holding `aura_config.yaml`: the path itself, RUN_DIR/final, or a registered checkpoint name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for candidate in (path, path / "final"):
            if (candidate / CONFIG_FILE).is_file():
                return candidate
        raise CheckpointError(
            f"{path}: not an AuRA checkpoint (no {CONFIG_FILE} in it or in {path / 'final'}). "
            "Give a RUN_DIR from `aura train`, its final/ folder, or a folder written by `aura export`."
        )
    if not path.is_absolute() and len(path.parts) == 1:  # a shipped checkpoint's registry name
        return checkpoint_folder(registry.resolve_checkpoint(str(name_or_path)))
    raise CheckpointError(
        f"{name_or_path!r}: no such checkpoint folder. Give a RUN_DIR from `aura train`, its final/ folder, "
        "or a folder written by `aura export`."
    )


def run_folders(model: str | Path) -> tuple[Path, Path]:
    """(inference checkpoint folder, run directory) for RUN_DIR, RUN_DIR/final or a shipped name. The run
    directory holds the training-only files (heads, config.yaml); a shipped checkpoint keeps them inside."""
    folder = checkpoint_folder(model)
    run_dir = folder.parent if folder.name == "final" else folder
    return folder, run_dir


class AuraModel:
    """A trained AuRA student ready to answer: `generate`, `stream`, batched `run_batch`, `export`.

    Long audio: a clip over 30 s is cut into 30-s windows that go through the embedding layer one by
    one, because Whisper's position table (which the embedding layer keeps) covers 30 s. Embedding
    positions therefore restart in every window, while the LLM positions simply continue across the
    windows; attention is bidirectional inside a window and causal from one window to the next.
    """

    def __init__(
        self, student: AuraStudent, name: str = "aura", train_config: AuraConfig | None = None
    ) -> None:
        self.student, self.name, self.train_config = student, name, train_config
        # requests get the system prompt the run trained with (None = the chat template's default)
        self.system_prompt = train_config.data.system_prompt if train_config is not None else None
        self.tokenizer = student.tokenizer
        self.stop_ids = stop_token_ids(student.llm, student.tokenizer)
        # switching the adapter off is model-wide state: one batch at a time, whatever thread asks
        self._running = threading.RLock()

    @property
    def merged(self) -> bool:
        """False while LoRA is a separate adapter (the default; text-only requests then bypass it)."""
        return not isinstance(self.student.llm, PeftModel)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        merge: bool = False,
        audio_attention: str | None = None,
    ) -> AuraModel:
        """Load RUN_DIR, RUN_DIR/final or an `aura export` folder; never loads the teacher.

        By default the adapter stays apart, so requests without audio run the exact base LLM: LoRA
        trained on speech rewrites the text answers too (the shipped checkpoint merged answers "What is
        the capital of France?" with the question itself). `merge=True` folds LoRA into the weights:
        on the shipped checkpoint audio requests get their first token about 1.1x sooner and decode about
        1.4x faster (`benchmarks/merge.py`), and text-only requests get the speech-tuned LLM. A merged
        `aura export` folder has no adapter left to switch off.

        `audio_attention` (`model.audio_attention`'s values) replaces the attention the checkpoint was
        trained with, for every request: `"chunk-causal"` lets `open_stream` run a checkpoint trained
        full-span, whose answers, offline too, then change.
        """
        folder = checkpoint_folder(name_or_path)
        if not (folder / "adapter_config.json").is_file() and (folder / "config.json").is_file():
            student = _load_merged(folder, dtype, device)
        elif (folder / "llm").is_dir():  # `aura export` without --merge: base LLM shipped alongside
            llm, tokenizer = load_llm(folder / "llm", dtype=dtype, device=device)
            student = AuraStudent.from_pretrained(
                folder, dtype=dtype, device=device, llm=llm, tokenizer=tokenizer
            )
        else:
            student = AuraStudent.from_pretrained(folder, dtype=dtype, device=device)
        if merge and student.mergeable:
            student.merge_lora()
        if audio_attention is not None:
            student.set_audio_attention(audio_attention)
        run_dir = folder.parent if folder.name == "final" else folder
        config_path = run_dir / TRAIN_CONFIG
        train_config = load_config(config_path) if config_path.is_file() else None
        return cls(student, name=run_dir.name, train_config=train_config)

    # ---------------------------------------------------------------- requests
    def request(
        self,
        audio: AudioSource | Sequence[AudioSource] | None = None,
        prompt: str | None = None,
        *,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> GenerationRequest:
        """One request from the `generate` arguments: `audio` is one clip or a list of clips for one prompt.

        With audio and no prompt the model transcribes; a prompt without `<audio>` gets the audio first.
        `system` defaults to the system prompt the run was trained with (`data.system_prompt`).
        """
        clips = [] if audio is None else list(audio) if isinstance(audio, list | tuple) else [audio]
        waves = [load_audio(clip) for clip in clips]
        if prompt is None and waves:
            prompt = TRANSCRIBE_PROMPT
        prompt = prompt or ""
        if waves and AUDIO_PLACEHOLDER not in prompt:
            prompt = "\n".join([AUDIO_PLACEHOLDER] * len(waves) + [prompt]).rstrip("\n")
        system = system if system is not None else self.system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return GenerationRequest(
            messages=messages,
            audio=waves,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )

    def generate(
        self,
        audio: AudioSource | list[AudioSource | None] | None = None,
        prompt: str | list[str | None] | None = None,
        **options: object,
    ) -> str | list[str]:
        """Answer one request, or a batch when `audio` or `prompt` is a list (one entry per request).

        `audio` is a path, encoded bytes or a 16-kHz float array; options are those of `request`
        (`max_new_tokens`, `temperature` (0 = greedy, deterministic), `top_p`, `seed`, `system`).
        """
        batched = isinstance(audio, list) or isinstance(prompt, list)
        if not batched:
            return self.run_batch([self.request(audio, prompt, **options)])[0].text  # type: ignore[arg-type]
        audios = audio if isinstance(audio, list) else [audio] * len(prompt)  # type: ignore[arg-type]
        prompts = prompt if isinstance(prompt, list) else [prompt] * len(audios)
        if len(audios) != len(prompts):
            raise ValueError(
                f"{len(audios)} audio entries but {len(prompts)} prompts; give one of each per request."
            )
        requests = [self.request(a, p, **options) for a, p in zip(audios, prompts, strict=True)]  # type: ignore[arg-type]
        return [result.text for result in self.run_batch(requests)]

    def stream(
        self,
        audio: AudioSource | Sequence[AudioSource] | None = None,
        prompt: str | None = None,
        **options: object,
    ) -> Iterator[str]:
        """Yield the answer's text pieces as they are produced (time the first one for TTFT).

        One request: a list in `audio` means several clips for this one prompt (as in `request`).
        """
        request = self.request(audio, prompt, **options)  # type: ignore[arg-type]
        with self._running:
            decoding = self.decoding([request])
            with self._adapter_for(decoding.requests):
                for _, piece in decoding:
                    yield piece

    def open_stream(
        self,
        prompt: str | None = None,
        *,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> StreamingSession:
        """A session for one request whose audio arrives while it is spoken (`aura.infer.streaming`):
        `feed(samples)` as it comes, then `finish()` for the answer's text pieces. The prompt and options
        are those of `request`; the audio goes where `<audio>` is, or before the prompt's text. Needs a
        chunk-causal model (else `StreamingError`)."""
        from aura.infer.streaming import StreamingSession

        prompt = TRANSCRIBE_PROMPT if prompt is None else prompt
        if AUDIO_PLACEHOLDER not in prompt:
            prompt = f"{AUDIO_PLACEHOLDER}\n{prompt}".rstrip("\n")
        request = self.request(
            None,
            prompt,
            system=system,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        return StreamingSession(self, request)

    # ---------------------------------------------------------------- batches
    def _layout(self, request: GenerationRequest) -> tuple[list[str], list[np.ndarray]]:
        """The chat-templated prompt cut at its audio, with one piece boundary per 30-s window."""
        pieces = self.student.render(request.messages).split(AUDIO_PLACEHOLDER)
        if len(pieces) - 1 != len(request.audio):
            raise ValueError(
                f"the messages hold {len(pieces) - 1} {AUDIO_PLACEHOLDER} placeholders but {len(request.audio)} "
                "clips were given; put one placeholder where each clip goes."
            )
        texts, windows = [pieces[0]], []
        for wave, piece in zip(request.audio, pieces[1:], strict=True):
            cut = [wave[start : start + WINDOW_SAMPLES] for start in range(0, len(wave), WINDOW_SAMPLES)]
            windows += cut
            texts += [""] * (len(cut) - 1) + [piece]
        return texts, windows

    def check(self, request: GenerationRequest) -> int:
        """The request's prompt length in tokens; ValueError if prompt + max_new_tokens overflow the LLM.

        Cheap (no model call), so a server can refuse one bad request before it joins a batch.
        """
        request.validate()
        texts, windows = self._layout(request)
        text_tokens = sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if t)
        audio_tokens = sum(math.ceil(encoder_frames(len(w)) / self.student.config.k) for w in windows)
        prompt = text_tokens + audio_tokens
        limit = getattr(self.student.llm.config, "max_position_embeddings", None)
        if limit is not None and prompt + request.max_new_tokens > limit:
            raise ValueError(
                f"the prompt is {prompt} tokens ({audio_tokens} of them audio) and up to {request.max_new_tokens} "
                f"new tokens were asked for, over the model's context of {limit} tokens. "
                "Send shorter audio or ask for fewer tokens."
            )
        return prompt

    def prefill(self, requests: Sequence[GenerationRequest]) -> StudentBatch:
        """Chat-template each request and splice its audio in (long clips as 30-s windows)."""
        texts, mels = [], []
        for request in requests:
            pieces, windows = self._layout(request)
            texts.append(AUDIO_PLACEHOLDER.join(pieces))
            mels.append([self.student.audio_features(window) for window in windows])
        with torch.inference_mode():
            return self.student.build_batch(texts, mels)

    def decoding(self, requests: Sequence[GenerationRequest]) -> Decoding:
        """A batch ready to iterate for `(row, piece)`; see `Decoding`."""
        return Decoding(
            self.student.llm,
            self.tokenizer,
            self.prefill(requests),
            list(requests),
            self.stop_ids,
            expert=self.student.expert,
        )

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_text: OnText | None = None,
        on_done: Callable[[int, GenerationResult], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate for all requests together; `on_text(row, piece)` returning False stops that row, and
        `on_done(row, result)` hands out each row's result as soon as it is complete (a short answer need
        not wait for the longest one in its batch).

        Unmerged, requests with and without audio run as two batches: only the audio ones use LoRA, the
        others run the exact base LLM. Calls from several threads wait for each other. A request with a
        value out of range raises `RequestError` before any model work.
        """
        for request in requests:
            request.validate()
        results: list[GenerationResult | None] = [None] * len(requests)
        groups = [list(range(len(requests)))]
        if not self.merged:
            groups = [
                [i for i, r in enumerate(requests) if r.audio],
                [i for i, r in enumerate(requests) if not r.audio],
            ]
        with self._running:
            for group in (g for g in groups if g):
                decoding = self.decoding([requests[i] for i in group])
                if on_done is not None:
                    decoding.on_finish = lambda row, d=decoding, g=group: on_done(g[row], d.result(row))
                with self._adapter_for(decoding.requests):
                    for row, piece in decoding:
                        if on_text is not None and not on_text(group[row], piece):
                            decoding.cancel(row)
                for row, result in zip(group, decoding.results(), strict=True):
                    results[row] = result
        return [r for r in results if r is not None]

    def _adapter_for(self, requests: Sequence[GenerationRequest]) -> contextlib.AbstractContextManager[None]:
        """Unmerged and no audio in the batch: run the base LLM with the adapter switched off."""
        if self.merged or any(r.audio for r in requests):
            return contextlib.nullcontext()
        return self.student.llm.disable_adapter()

    # ---------------------------------------------------------------- export
    def export(self, out: str | Path, merge: bool = True) -> Path:
        """Write a self-contained folder that `AuraModel.from_pretrained` loads.

        Merged: the LLM with LoRA folded in, its tokenizer, the embedding layer and the config, all at
        the top of `out`, so `AutoModelForCausalLM.from_pretrained(out)` loads the LLM part as is.
        Unmerged: the adapter, embedding and config at the top and the base LLM in `out/llm`.
        """
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out}: folder exists and is not empty; choose a new --out folder.")
        if merge and self.student.config.arch != "aura":
            raise ValueError("--merge exports AuRA checkpoints; export the bridge baseline without --merge.")
        if self.merged and not merge:
            raise ValueError(
                "this model was loaded with LoRA merged; load it with merge=False to export unmerged."
            )
        if merge:
            self.student.merge_lora()
            self.student.save_pretrained(out)  # a merged LLM saves its full weights and config.json
            self.tokenizer.save_pretrained(out)
        else:
            self.student.save_pretrained(out)
            self._save_base_llm(out / "llm")
        if self.train_config is not None:  # the run's settings travel with it (its system prompt above all)
            self.train_config.save(out / TRAIN_CONFIG)
        return out

    def _save_base_llm(self, folder: Path) -> None:
        base = self.student.llm.get_base_model()
        # the base weights without LoRA: peft keeps them under `<module>.base_layer.*`
        weights = {
            name.replace(".base_layer.", "."): tensor
            for name, tensor in base.state_dict().items()
            if ".lora_" not in name
        }
        base.save_pretrained(folder, state_dict=weights)
        self.tokenizer.save_pretrained(folder)


def _load_merged(folder: Path, dtype: torch.dtype, device: str | torch.device) -> AuraStudent:
    """A merged export: the LLM is the folder itself and there is no adapter to apply."""
    meta = yaml.safe_load((folder / CONFIG_FILE).read_text())
    config = AuraConfig.from_dict({"model": meta["model"]}, source=str(folder / CONFIG_FILE)).model
    llm, tokenizer = load_llm(folder, dtype=dtype, device=device)
    audio = AudioEmbedding(**meta["audio"])
    audio.load_state_dict(load_file(folder / EMBEDDING_FILE))
    student = AuraStudent(
        llm, tokenizer, audio.to(device=device, dtype=dtype), config, meta["num_blocks"], meta["n_mels"]
    )
    return student.eval()
