"""A trained AuRA checkpoint answering: requests from `generate` arguments, batched runs (LoRA switched off
for rows without audio), streaming, and export.

Only the LLM (+ LoRA) and the audio embedding layer run here; the Whisper teacher is never loaded. The
token loop is `aura.infer.decoding.Decoding`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import PeftModel

from aura.audio.features import AudioSource
from aura.config import AuraConfig
from aura.infer.chat import ChatModel, OnDone, OnText, Requests
from aura.infer.decoding import (
    Decoding,
    GenerationRequest,
    GenerationResult,
    stop_token_ids,
)
from aura.model import checkpoint
from aura.model.batching import StudentBatch
from aura.model.llm import load_llm
from aura.model.prompt import AUDIO_PLACEHOLDER, TRANSCRIBE_PROMPT
from aura.model.student import AuraStudent

if TYPE_CHECKING:
    from aura.infer.streaming import StreamingSession


class AuraModel(ChatModel):
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
        self.audio_stride = student.config.k
        self.context_length = getattr(student.llm.config, "max_position_embeddings", None)
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
        folder, run_dir = checkpoint.run_folders(name_or_path)
        base_llm = checkpoint.base_llm_folder(folder)
        if checkpoint.is_merged(folder):
            student = _load_merged(folder, dtype, device)
        elif base_llm is not None:  # `aura export` without --merge: base LLM shipped alongside
            llm, tokenizer = load_llm(base_llm, dtype=dtype, device=device)
            student = AuraStudent.from_pretrained(
                folder, dtype=dtype, device=device, llm=llm, tokenizer=tokenizer
            )
        else:
            student = AuraStudent.from_pretrained(folder, dtype=dtype, device=device)
        if merge and student.mergeable:
            student.merge_lora()
        if audio_attention is not None:
            student.set_audio_attention(audio_attention)
        return cls(student, name=run_dir.name, train_config=checkpoint.read_train_config(run_dir))

    # ---------------------------------------------------------------- requests
    def open_stream(self, prompt: str | None = None, **options: object) -> StreamingSession:
        """A session for one request whose audio arrives while it is spoken (`aura.infer.streaming`):
        `feed(samples)` as it comes, then `finish()` for the answer's text pieces. The prompt and options
        are those of `request`; the audio goes where `<audio>` is, or before the prompt's text. Needs a
        chunk-causal model (else `StreamingError`)."""
        from aura.infer.streaming import StreamingSession

        prompt = TRANSCRIBE_PROMPT if prompt is None else prompt
        if AUDIO_PLACEHOLDER not in prompt:
            prompt = f"{AUDIO_PLACEHOLDER}\n{prompt}".rstrip("\n")
        request = self.request(None, prompt, **options)  # type: ignore[arg-type]
        return StreamingSession(self, request)

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

    # ---------------------------------------------------------------- batches
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
        self, requests: Requests, on_text: OnText | None = None, on_done: OnDone | None = None
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
            self._save_base_llm(out / checkpoint.BASE_LLM_DIR)
        if self.train_config is not None:  # the run's settings travel with it (its system prompt above all)
            self.train_config.save(out / checkpoint.TRAIN_CONFIG)
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
    meta = checkpoint.read_meta(folder)
    llm, tokenizer = load_llm(folder, dtype=dtype, device=device)
    audio = checkpoint.read_audio(folder, meta)
    student = AuraStudent(
        llm, tokenizer, audio.to(device=device, dtype=dtype), meta.model, meta.num_blocks, meta.n_mels
    )
    return student.eval()
