"""What every backend answering `GenerationRequest`s shares (torch: `AuraModel`; llama.cpp: `LlamaCppModel`):
requests from `generate`'s arguments, the chat-templated prompt cut at its audio, and the cheap length check a
server runs before a request joins a batch."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from aura.audio.features import WINDOW_SAMPLES, AudioSource, encoder_frames, load_audio
from aura.infer.decoding import GenerationRequest, GenerationResult
from aura.model.prompt import AUDIO_PLACEHOLDER, TRANSCRIBE_PROMPT, audio_first, render_chat

OnText = Callable[[int, str], bool]  # (row, new text) -> keep generating this row?
Requests = Sequence[GenerationRequest]  # one batch, answered together
OnDone = Callable[[int, GenerationResult], None]  # (row, its result) as soon as that row is complete


class ChatModel(ABC):
    """A backend sets the attributes below and implements `run_batch` and `stream`."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    system_prompt: str | None  # the system prompt the run trained with (None = the template's default)
    audio_stride: int  # audio encoder frames per LLM position (the embedding layer's `k`)
    context_length: int | None  # most prompt + new tokens the LLM takes (None = no known limit)

    def render(self, messages: list[dict[str, str]]) -> str:
        """Chat-templated text for `messages`, ending with the assistant's generation prompt."""
        return render_chat(self.tokenizer, messages)

    @abstractmethod
    def run_batch(
        self, requests: Requests, on_text: OnText | None = None, on_done: OnDone | None = None
    ) -> list[GenerationResult]:
        """Answer `requests`; `on_text(row, piece)` returning False stops that row, `on_done(row, result)`
        hands out each row's result as soon as it is complete."""

    @abstractmethod
    def stream(
        self,
        audio: AudioSource | Sequence[AudioSource] | None = None,
        prompt: str | None = None,
        **options: object,
    ) -> Iterator[str]:
        """Yield one request's answer as text pieces as they are produced (time the first one for TTFT)."""

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
        prompt = audio_first(prompt, clips=len(waves))
        system = system if system is not None else self.system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return GenerationRequest(messages, waves, max_new_tokens, temperature, top_p, seed)

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

    def _layout(self, request: GenerationRequest) -> tuple[list[str], list[np.ndarray]]:
        """The chat-templated prompt cut at its audio, with one piece boundary per 30-s window."""
        pieces = self.render(request.messages).split(AUDIO_PLACEHOLDER)
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
        audio_tokens = sum(math.ceil(encoder_frames(len(w)) / self.audio_stride) for w in windows)
        prompt = text_tokens + audio_tokens
        limit = self.context_length
        if limit is not None and prompt + request.max_new_tokens > limit:
            raise ValueError(
                f"the prompt is {prompt} tokens ({audio_tokens} of them audio) and up to {request.max_new_tokens} "
                f"new tokens were asked for, over the model's context of {limit} tokens. "
                "Send shorter audio or ask for fewer tokens."
            )
        return prompt
