"""The systems `aura eval` compares, all answering through `System.answer` (a batch) and `System.stream`
(one example, text as it is generated): the AuRA and bridge checkpoints, the cascades, the text ceiling, the
teacher alone; and the factory that builds them from `--systems` with one set of base models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aura.eval.items import ASR_TASK, EvalError, EvalItem
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import Decoding, GenerationRequest, stop_token_ids
from aura.model.batching import StudentBatch, span_attention_mask
from aura.model.checkpoint import checkpoint_folder, read_meta

SYSTEMS = ("aura", "cascade", "cascade-beam", "cascade-fast", "bridge", "text", "whisper")


# ------------------------------------------------------------------------------------------ systems
class System(ABC):
    """What `aura eval`, the demo and the benchmarks call: batched answers and a streamed answer."""

    name: str
    tasks: tuple[str, ...] | None = None  # the tasks it can answer (None = all)
    skips: tuple[str, ...] = ()  # tasks it is not evaluated on

    def handles(self, task: str) -> bool:
        return (self.tasks is None or task in self.tasks) and task not in self.skips

    @abstractmethod
    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        """Greedy answers for a batch, in order."""

    @abstractmethod
    def stream(self, item: EvalItem) -> Iterator[str]:
        """The answer to one example as text pieces, produced as they are generated."""


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """One user turn through the chat template (its default system prompt included), as token ids: the
    prompt every text-reading baseline gives its LLM, whatever runtime runs it."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ChatLLM:
    """A plain causal LLM (no LoRA) answering chat-templated text prompts through `aura.infer.decoding.Decoding`.

    The baselines go through the same prefill-then-cached-decode loop as the AuRA model, so their
    latencies compare implementations of the systems, not two generation loops.
    """

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int = 64):
        self.llm, self.tokenizer, self.max_new_tokens = llm.eval(), tokenizer, max_new_tokens
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.stop_ids = stop_token_ids(llm, tokenizer)

    @torch.inference_mode()
    def _prefill(self, prompts: Sequence[str]) -> StudentBatch:
        ids = [chat_prompt_ids(self.tokenizer, p) for p in prompts]
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        length = max(len(row) for row in ids)
        tokens = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)
        valid = torch.zeros(len(ids), length, dtype=torch.bool)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = torch.tensor(row)
            valid[i, : len(row)] = True
        embeds = embed(tokens.to(device))
        mask = span_attention_mask(valid, torch.zeros_like(tokens), False, embeds.dtype)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return StudentBatch(
            embeds=embeds,
            mask=mask.to(device),
            positions=positions.to(device),
            valid=valid.to(device),
            lengths=[len(row) for row in ids],
            audio_mask=torch.zeros_like(valid, device=device),
        )

    def decoding(self, prompts: Sequence[str]) -> Decoding:
        requests = [GenerationRequest(messages=[], max_new_tokens=self.max_new_tokens) for _ in prompts]
        return Decoding(self.llm, self.tokenizer, self._prefill(prompts), requests, self.stop_ids)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        decoding = self.decoding(prompts)
        for _ in decoding:
            pass
        return [result.text for result in decoding.results()]

    def stream(self, prompt: str) -> Iterator[str]:
        for _, piece in self.decoding([prompt]):
            yield piece


class TextSystem(System):
    """The ceiling: the base LLM reads the gold transcript where the audio was (QA tasks only)."""

    name = "text"
    skips = (ASR_TASK,)

    def __init__(self, llm: ChatLLM):
        self.llm = llm

    @staticmethod
    def _gold(item: EvalItem) -> str:
        if item.transcript is None:
            raise EvalError(f"example {item.id} has no transcript; the `text` system needs gold transcripts.")
        return item.text_prompt(item.transcript)

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        return self.llm.generate([self._gold(item) for item in items])

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield from self.llm.stream(self._gold(item))


class CascadeSystem(System):
    """Whisper transcribes, then the base LLM answers from its transcript: the classic pipeline (QA tasks
    only: its transcription is the `whisper` system's)."""

    skips = (ASR_TASK,)

    def __init__(self, teacher: Any, llm: ChatLLM, beam_size: int = 1, name: str = "cascade"):
        self.teacher, self.llm, self.beam_size, self.name = teacher, llm, beam_size, name

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        transcripts = self.teacher.transcribe([item.wave for item in items], beam_size=self.beam_size)
        return self.llm.generate([item.text_prompt(t) for item, t in zip(items, transcripts, strict=True)])

    def stream(self, item: EvalItem) -> Iterator[str]:
        transcript = self.teacher.transcribe(item.wave, beam_size=self.beam_size)
        yield from self.llm.stream(item.text_prompt(transcript))


class WhisperSystem(System):
    """The teacher as a plain ASR model: its greedy transcript is the answer, on transcription tasks only."""

    tasks = (ASR_TASK,)

    def __init__(self, teacher: Any, name: str = "whisper"):
        self.teacher, self.name = teacher, name

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        return self.teacher.transcribe([item.wave for item in items])

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield self.teacher.transcribe(item.wave)


# ------------------------------------------------------------------------------------------ building
class CheckpointSystem(System):
    """`aura` or `bridge`: a checkpoint trained by `aura train`, answering through `aura.infer.aura_model.AuraModel`."""

    def __init__(self, model: AuraModel, name: str = "aura", max_new_tokens: int = 64):
        self.model, self.name, self.max_new_tokens = model, name, max_new_tokens

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        answers = self.model.generate(
            audio=[item.wave for item in items],
            prompt=[item.prompt for item in items],
            max_new_tokens=self.max_new_tokens,
        )
        return list(answers)

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield from self.model.stream(item.wave, item.prompt, max_new_tokens=self.max_new_tokens)


@dataclass
class SystemFactory:
    """Builds the requested systems on one base LLM and one teacher, loading each shared part once.

    The base LLM and teacher default to the ones the AuRA checkpoint was trained with, so a comparison
    cannot silently mix models; a bridge checkpoint trained on another LLM or teacher is refused.
    """

    model: str | Path | None = None
    bridge_model: str | Path | None = None
    llm: str | None = None
    teacher: str | None = None
    beam_size: int = 5
    max_new_tokens: int = 64
    extra: dict[str, str] = field(default_factory=dict)  # more checkpoints by system name (ablations)
    dtype: torch.dtype = torch.float32  # of the checkpoints' weights and activations
    _checkpoints: dict[str, AuraModel] = field(default_factory=dict)
    _chat: ChatLLM | None = None
    _teacher: Any = None

    def _path(self, name: str) -> str | Path:
        path = self.extra.get(name) or (self.model if name == "aura" else self.bridge_model)
        if path is None:
            flag = "--model" if name == "aura" else "--bridge-model"
            raise EvalError(
                f"the `{name}` system needs its checkpoint: pass {flag} RUN_DIR (from `aura train`)."
            )
        return path

    def inspect(self, name: str) -> None:
        """Read a checkpoint's config (cheap, no weights): check its architecture, adopt or check its models."""
        path = self._path(name)
        model = read_meta(checkpoint_folder(path)).model
        if name in ("aura", "bridge") and model.arch != name:
            raise EvalError(f"{path}: a checkpoint of the `{model.arch}` architecture, not `{name}`.")
        self._agree(name, model.llm, model.teacher)

    def checkpoint(self, name: str) -> AuraModel:
        """The checkpoint behind system `name` (`aura`, `bridge` or an extra NAME=DIR), loaded once."""
        if name not in self._checkpoints:
            self.inspect(name)
            self._checkpoints[name] = AuraModel.from_pretrained(self._path(name), dtype=self.dtype)
        return self._checkpoints[name]

    def _agree(self, source: str, llm: str, teacher: str) -> None:
        """Adopt the checkpoint's base LLM and teacher, or refuse one that differs from those in use."""
        for attr, value in (("llm", llm), ("teacher", teacher)):
            current = getattr(self, attr)
            if current is None:
                setattr(self, attr, value)
            elif str(current) != str(value):
                raise EvalError(
                    f"the `{source}` checkpoint was trained with {attr} {value!r} but the evaluation uses "
                    f"{current!r}; all systems must share the same base LLM and teacher."
                )

    def _defaults(self) -> None:
        """The checkpoints' base LLM and teacher, else the registry's defaults."""
        if self.model is not None:
            self.inspect("aura")
        if self.bridge_model is not None:
            self.inspect("bridge")
        from aura.registry import DEFAULT_STUDENT, DEFAULT_TEACHER

        self.llm = self.llm or DEFAULT_STUDENT
        self.teacher = self.teacher or DEFAULT_TEACHER

    def chat(self) -> ChatLLM:
        if self._chat is None:
            self._defaults()
            from aura.model.llm import load_llm

            self._chat = ChatLLM(*load_llm(self.llm), max_new_tokens=self.max_new_tokens)
        return self._chat

    def whisper(self) -> Any:
        if self._teacher is None:
            self._defaults()
            from aura.teacher.whisper import load_teacher

            self._teacher = load_teacher(self.teacher)
        return self._teacher

    def build(self, name: str) -> System:
        if name in ("aura", "bridge") or name in self.extra:
            return CheckpointSystem(self.checkpoint(name), name=name, max_new_tokens=self.max_new_tokens)
        if name == "text":
            return TextSystem(self.chat())
        if name == "cascade":
            return CascadeSystem(self.whisper(), self.chat(), beam_size=1, name=name)
        if name == "cascade-beam":
            return CascadeSystem(self.whisper(), self.chat(), beam_size=self.beam_size, name=name)
        if name == "whisper":
            return WhisperSystem(self.whisper())
        if name == "cascade-fast":
            from aura.eval.fast_cascade import FastCascadeSystem, FastWhisper, LlamaCppChat

            self._defaults()
            return FastCascadeSystem(
                FastWhisper(str(self.teacher)), LlamaCppChat(str(self.llm), self.max_new_tokens)
            )
        raise EvalError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}.")

    def release(self, name: str) -> None:
        """Drop a checkpoint once its system is done, so two LLM copies are never held for long."""
        self._checkpoints.pop(name, None)


def parse_systems(spec: str | Sequence[str]) -> dict[str, str | None]:
    """`"aura,cascade,nodistill=runs/nd"` -> `{"aura": None, "cascade": None, "nodistill": "runs/nd"}`.

    `NAME=DIR` adds a further checkpoint under its own name (an ablation beside `aura`); other entries
    must be built-in systems. Unknown or repeated names are refused.
    """
    entries = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    systems: dict[str, str | None] = {}
    for entry in entries:
        name, _, path = (part.strip() for part in entry.partition("="))
        if path and (not name or name in SYSTEMS):
            raise EvalError(f"{entry!r}: give an extra checkpoint a new name, e.g. nodistill=RUN_DIR.")
        if not path and name not in SYSTEMS:
            raise EvalError(
                f"unknown system {name!r}; choose from {', '.join(SYSTEMS)} or add a checkpoint as NAME=RUN_DIR."
            )
        if name in systems:
            raise EvalError(f"system {name!r} listed twice in {spec!r}.")
        systems[name] = path or None
    if not systems:
        raise EvalError(f"no systems in {spec!r}; choose from {', '.join(SYSTEMS)} (comma-separated).")
    return systems
