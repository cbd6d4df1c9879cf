"""Speech read while it is spoken: a session that puts audio through the LLM chunk by chunk as it arrives.

A chunk-causal model (`model.audio_attention=chunk-causal`) lets no audio token see audio after its own
chunk, so a chunk's keys and values in the KV cache are final once the chunk has been heard. The session
runs the text before the audio when it opens, then every complete chunk as soon as its samples (and the
12.5 ms the front end reads past a chunk, see `aura.audio.chunks`) have arrived. When the speech ends only
the last, partial chunk and the text after the audio remain, whatever the length of the utterance: time to
the first token stops growing with it.

The answer equals the offline answer of the same model on the same audio (`AuraModel.generate`): the same
features, the same embedding (its conv stem computed chunk by chunk with the frames at each chunk's edges
carried over), the same mask and positions, only split into several forwards. Audio over 30 s is cut
into 30-s windows exactly as offline, each with its own embedding positions and chunks.

A model trained with full-span (`bidirectional`) or `causal` attention is refused rather than streamed:
streaming would change the attention it was trained with, so its answers would not be its offline ones.
`AuraModel.from_pretrained(..., audio_attention="chunk-causal")` runs such a checkpoint chunk-causal on
purpose, for every request, offline ones included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import DynamicCache

from aura.audio.chunks import ChunkedMel, chunk_frames
from aura.audio.features import WINDOW_SAMPLES
from aura.compat import CACHE_KWARG
from aura.infer.decoding import Decoding, GenerationRequest, GenerationResult, PromptState, RequestError
from aura.model.batching import span_attention_mask
from aura.model.prompt import AUDIO_PLACEHOLDER

if TYPE_CHECKING:
    from aura.infer.aura_model import AuraModel


class StreamingError(ValueError):
    """A model that cannot take streamed audio, or a session used out of order; the message says what to do."""


class StreamingSession:
    """One spoken request whose audio arrives in pieces: `feed(samples)` as it is spoken, then `finish()`.

    `feed` takes 16-kHz mono float samples (any length) and runs every chunk they complete before it
    returns; `finish()` runs what remains and returns an iterator of the answer's text pieces (the first
    one is the time to first token), after which `result` holds the `GenerationResult`. Open one with
    `AuraModel.open_stream`. Calls from several threads to one model wait for each other, chunk by chunk.
    """

    def __init__(self, model: AuraModel, request: GenerationRequest) -> None:
        student = model.student
        config = student.config
        if config.audio_attention != "chunk-causal":
            raise StreamingError(
                f"{model.name}: this model reads its audio with model.audio_attention={config.audio_attention}, "
                "which looks at the whole clip, so it cannot be streamed without changing its answers. Train "
                "with model.audio_attention=chunk-causal, or load it with AuraModel.from_pretrained(..., "
                "audio_attention='chunk-causal') (`--audio-attention chunk-causal`) to run it chunk-causal."
            )
        request.validate()
        if request.audio:
            raise RequestError(
                "audio", "a streamed request takes its audio through feed(), not in the request."
            )
        pieces = student.render(request.messages).split(AUDIO_PLACEHOLDER)
        if len(pieces) != 2:
            raise RequestError(
                "messages",
                f"a streamed request needs exactly one {AUDIO_PLACEHOLDER} in its messages, got {len(pieces) - 1}.",
            )
        self.model, self.request, self.student = model, request, student
        self._after = pieces[1]
        self._chunk = chunk_frames(config.audio_chunk_seconds, config.k)  # encoder frames per chunk
        self._llm = student.llm
        self._embed_tokens = self._llm.get_input_embeddings()
        self._device = self._embed_tokens.weight.device
        self._dtype = self._embed_tokens.weight.dtype
        self._cache = DynamicCache()
        self._length = 0  # positions in the cache
        self._next_chunk_id = 1  # chunk numbers in the mask (0 = text), one per chunk of every window
        self._limit = getattr(self._llm.config, "max_position_embeddings", None)
        self._window = ChunkedMel(student.n_mels)
        self._done = 0  # encoder frames of the current window already in the cache
        self.samples = 0  # samples received
        self.result: GenerationResult | None = None
        self._finished = False
        before = self._text(pieces[0])
        self._forward(before, torch.zeros(len(before), dtype=torch.long))
        self._prefix_tokens = self._length  # the text before the audio

    # ---------------------------------------------------------------- audio in
    def feed(self, samples: np.ndarray | torch.Tensor) -> int:
        """Add audio (16-kHz mono float samples) and run every chunk it completes; returns the audio
        tokens in the cache so far."""
        if self._finished:
            raise StreamingError("the session has finished; open a new one with AuraModel.open_stream.")
        wave = torch.as_tensor(np.asarray(samples, dtype=np.float32)).flatten()
        if not torch.isfinite(wave).all():
            raise RequestError("audio", "the samples hold NaN or infinite values; send finite 16-kHz floats.")
        self.samples += wave.numel()
        while wave.numel():
            room = WINDOW_SAMPLES - self._window.num_samples
            if room == 0:  # the window is full and more audio follows: close it as offline does
                self._close_window()
                room = WINDOW_SAMPLES
            self._window.add(wave[:room])
            wave = wave[room:]
            self._run_ready_chunks()
        return self._audio_tokens

    def finish(self) -> Iterator[str]:
        """End of speech: run the last chunk and the text after the audio, then decode. Yields the
        answer's text pieces as they are produced; `result` holds the whole answer afterwards."""
        if self._finished:
            raise StreamingError("finish() was already called; open a new session for the next request.")
        if self.samples == 0:
            raise RequestError("audio", "no audio was fed; feed() the speech before finish().")
        self._finished = True
        self._window.end()
        audio = self._window_tokens(final=True)
        text = self._text(self._after)
        logits = self._forward(
            torch.cat([audio[0], text]), torch.cat([audio[1], torch.zeros(len(text), dtype=torch.long)])
        )
        state = PromptState(
            cache=self._cache,
            logits=logits,
            position=torch.tensor([self._length], device=self._device),
            valid=torch.ones(1, self._length, dtype=torch.bool, device=self._device),
            lengths=[self._length],
            dtype=self._dtype,
        )
        decoding = Decoding(
            self._llm,
            self.model.tokenizer,
            state,
            [self.request],
            self.model.stop_ids,
            expert=self.student.expert,
        )
        with self.model._running:
            for _, piece in decoding:
                yield piece
        self.result = decoding.result(0)

    # ---------------------------------------------------------------- internals
    @property
    def prompt_tokens(self) -> int:
        """Tokens in the cache: the text before the audio and the audio run so far (all of the prompt
        once `finish()` has started)."""
        return self._length

    @property
    def _audio_tokens(self) -> int:
        return self._length - self._prefix_tokens

    def _text(self, text: str) -> torch.Tensor:
        ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return self._embed_tokens(torch.tensor(ids, dtype=torch.long, device=self._device))

    def _run_ready_chunks(self) -> None:
        embeds, chunk_ids = self._window_tokens(final=False)
        if len(embeds):
            self._forward(embeds, chunk_ids)

    def _close_window(self) -> None:
        self._window.end()
        embeds, chunk_ids = self._window_tokens(final=True)
        if len(embeds):
            self._forward(embeds, chunk_ids)
        self._window, self._done = ChunkedMel(self.student.n_mels), 0

    def _window_tokens(self, final: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and chunk numbers of the window's chunks that can run now: the complete ones whose
        last frame's context has arrived, or (`final`) everything left in a window that has ended."""
        window, audio = self._window, self.student.audio
        if final:
            stop = window.total_frames // 2  # type: ignore[operator]
        else:
            # encoder frame f reads mel frames up to 2f + 2
            ready = (window.ready() - 1) // 2
            stop = self._done + (ready - self._done) // self._chunk * self._chunk
        if stop <= self._done:
            return torch.zeros(0, audio.llm_width, dtype=self._dtype), torch.zeros(0, dtype=torch.long)
        window.extend(window.total_frames if final else 2 * stop + 1)
        with torch.inference_mode():
            frames = audio.frames_between(window.mel.to(self._device), self._done, stop, clip_end=final)
            embeds = audio.tokens(frames)
        chunks = (stop - self._done + self._chunk - 1) // self._chunk
        per_chunk = self._chunk // audio.k
        chunk_ids = self._next_chunk_id + torch.arange(len(embeds)) // per_chunk
        self._next_chunk_id += chunks
        self._done = stop
        return embeds.to(self._dtype), chunk_ids

    @torch.inference_mode()
    def _forward(self, embeds: torch.Tensor, chunk_ids: torch.Tensor) -> torch.Tensor:
        """Run new positions against the cache: each sees every cached position, text causally, audio its
        whole chunk; returns the next-token logits after the last one `(1, vocab)`."""
        n = len(embeds)
        if n == 0:
            return torch.zeros(0)
        if self._limit is not None and self._length + n + self.request.max_new_tokens > self._limit:
            raise RequestError(
                "audio",
                f"the prompt has reached {self._length + n} tokens and up to {self.request.max_new_tokens} new "
                f"tokens were asked for, over the model's context of {self._limit} tokens. Send shorter audio.",
            )
        valid = torch.ones(1, n, dtype=torch.bool)
        own = span_attention_mask(valid, chunk_ids[None], True, self._dtype)
        past = torch.zeros(1, 1, n, self._length, dtype=self._dtype)
        mask = torch.cat([past, own], dim=-1).to(self._device)
        positions = torch.arange(self._length, self._length + n, device=self._device)[None]
        audio_mask = (chunk_ids > 0)[None].to(self._device)
        with self.model._running, self.student.positions(audio_mask):
            out = self._llm(
                inputs_embeds=embeds[None],
                attention_mask=mask,
                position_ids=positions,
                **{CACHE_KWARG: self._cache},
                use_cache=True,
                # an index, not the int 1: for an int transformers takes the view [:, -1:], and a bfloat16
                # matmul of that view on the CPU copies the whole LM head first (60 ms for SmolLM2's)
                logits_to_keep=torch.tensor([n - 1], device=self._device),
            )
        self._length += n
        return out.logits[:, -1]
