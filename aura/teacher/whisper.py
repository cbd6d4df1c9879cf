"""The frozen Whisper teacher: per-layer encoder states as distillation targets, and transcripts.

Whisper was trained on padded 30-s windows and its states change when the input is shortened, so
every clip is encoded in padded windows and the states are cut back to the clip's own frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from aura.audio.features import (
    SAMPLES_PER_ENCODER_FRAME,
    WINDOW_MEL_FRAMES,
    WINDOW_SAMPLES,
    encoder_frames,
    has_sound,
    load_audio,
    log_mel_batch,
)
from aura.compat import CACHE_KWARG
from aura.registry import resolve_model

Wave = np.ndarray | torch.Tensor
DEFAULT_MAX_NEW_TOKENS = 224  # OpenAI's sample length: half the decoder's 448 positions
# what a multilingual Whisper is told to do, when decoding and when the transcript loss teacher-forces it
MULTILINGUAL_TASK = {"language": "en", "task": "transcribe"}


def _windows(num_samples: int) -> list[tuple[int, int]]:
    """Split a clip into the fewest windows of at most 30 s, of near-equal length (no tiny tail window
    for Whisper to hallucinate on) and cut at whole encoder frames so the per-window frames add up to
    `encoder_frames(num_samples)`."""
    count = math.ceil(num_samples / WINDOW_SAMPLES)
    step = math.ceil(num_samples / count / SAMPLES_PER_ENCODER_FRAME) * SAMPLES_PER_ENCODER_FRAME
    return [(start, min(start + step, num_samples)) for start in range(0, num_samples, step)]


class _SuppressTokens(LogitsProcessor):
    """Whisper's token suppression (always, and at the first generated position) with fixed index
    tensors: transformers' processors rebuild a vocabulary-sized `torch.isin` mask at every step, which
    costs more than a whole tiny.en decoding step on CPU. Output is identical."""

    def __init__(self, always: Sequence[int], at_begin: Sequence[int]) -> None:
        self.always = torch.tensor(list(always), dtype=torch.long)
        self.at_begin = torch.tensor(list(at_begin), dtype=torch.long)
        self.begin_index: int | None = None  # the decoder prompt's length, seen at the first call

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.begin_index is None:
            self.begin_index = input_ids.shape[-1]
        scores = scores.index_fill(1, self.always.to(scores.device), -math.inf)
        if input_ids.shape[-1] == self.begin_index:
            scores = scores.index_fill(1, self.at_begin.to(scores.device), -math.inf)
        return scores


class _BeamSharedCrossCache(EncoderDecoderCache):
    """Beam search reorders every cache at every step, but all beams of a clip attend to the same
    encoder output, so reordering the cross-attention keys/values only copies identical rows (half of
    Whisper-base's beam-search time on CPU). Same tokens as the stock cache."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


class Teacher:
    """A frozen Whisper model (eval mode, no gradients) used for encoder targets and transcription."""

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        name: str = "whisper",
        tokenizer: WhisperTokenizer | None = None,
    ) -> None:
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        config = model.config
        self.num_layers: int = config.encoder_layers
        self.width: int = config.d_model
        self.n_mels: int = config.num_mel_bins
        # OpenAI's convention: English-only checkpoints have 51864 tokens, multilingual ones more.
        multilingual = getattr(model.generation_config, "is_multilingual", config.vocab_size >= 51865)
        self.is_english_only: bool = not multilingual
        if multilingual and tokenizer is not None:
            # the prefix `decode` starts from, so the transcript loss reads as the decoder writes
            tokenizer.set_prefix_tokens(**MULTILINGUAL_TASK, predict_timestamps=False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _mel(self, mel: torch.Tensor) -> torch.Tensor:
        expected = (self.n_mels, WINDOW_MEL_FRAMES)
        if mel.ndim != 3 or tuple(mel.shape[1:]) != expected:
            raise ValueError(
                f"teacher {self.name}: expected log-mel of shape (batch, {expected[0]}, {expected[1]}), "
                f"got {tuple(mel.shape)}; compute it with aura.audio.features.log_mel_batch(waves, n_mels={self.n_mels})"
            )
        return mel.to(self.device, self.dtype)

    @torch.no_grad()
    def encode_mel(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All N+1 encoder states `(B, 1500, d)` for padded 30-s log-mels `(B, n_mels, 3000)`: 0 is the conv
        stem plus positions, i the output of block i, the last one after the final layer norm.
        (no_grad rather than inference_mode: the states are used as loss targets in autograd graphs.)"""
        return self.model.model.encoder(self._mel(mel), output_hidden_states=True).hidden_states

    def _prepare(self, wave: Wave | Sequence[Wave]) -> tuple[list[np.ndarray], bool]:
        single = isinstance(wave, np.ndarray | torch.Tensor)
        waves = [wave] if single else list(wave)
        if not waves:
            raise ValueError(f"teacher {self.name}: got an empty list of waveforms")
        arrays = [
            load_audio(w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else w, name=f"waveform {i}")
            for i, w in enumerate(waves)
        ]
        return arrays, single

    def _split(self, waves: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        """Windows of all clips in order, and the clip index of each window."""
        windows, owners = [], []
        for index, wave in enumerate(waves):
            for start, end in _windows(len(wave)):
                windows.append(wave[start:end])
                owners.append(index)
        return windows, owners

    def hidden_states(
        self, wave: Wave | Sequence[Wave], batch_size: int = 8
    ) -> list[torch.Tensor] | list[list[torch.Tensor]]:
        """Per-layer states `(frames, d)` (float32, CPU) of one 16-kHz waveform, `frames = encoder_frames(n)`;
        for a list of waveforms, a list of such lists. Clips over 30 s are encoded window by window."""
        waves, single = self._prepare(wave)
        windows, owners = self._split(waves)
        per_clip: list[list[list[torch.Tensor]]] = [[] for _ in waves]
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            states = self.encode_mel(log_mel_batch(batch, n_mels=self.n_mels))
            for j, window in enumerate(batch):
                frames = encoder_frames(len(window))
                per_clip[owners[first + j]].append([s[j, :frames].float().cpu() for s in states])
        result = [
            [torch.cat(layer) for layer in zip(*clip_windows, strict=True)] for clip_windows in per_clip
        ]
        return result[0] if single else result

    @torch.no_grad()
    def decode(
        self,
        mel: torch.Tensor | None = None,
        *,
        encoder_states: torch.Tensor | None = None,
        beam_size: int = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> list[str]:
        """English texts decoded from padded log-mels `(B, n_mels, 3000)`, or from final encoder states
        `(B, T, d)` given instead (e.g. a student's states, for a decoder probe)."""
        if self.tokenizer is None:
            raise ValueError(f"teacher {self.name} has no tokenizer; load it with load_teacher() to decode")
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if (mel is None) == (encoder_states is None):
            raise ValueError("give exactly one of mel and encoder_states")
        options: dict = {} if self.is_english_only else dict(MULTILINGUAL_TASK)
        if encoder_states is not None:
            states = encoder_states.to(self.device, self.dtype)
            options["encoder_outputs"] = BaseModelOutput(last_hidden_state=states)
        else:
            options["input_features"] = self._mel(mel)
        if beam_size > 1:
            config = self.model.config
            options[CACHE_KWARG] = _BeamSharedCrossCache(
                DynamicCache(config=config), DynamicCache(config=config)
            )
        gen = self.model.generation_config
        # every window is a full one (or the states are all real): saying so keeps generate from guessing
        size = len(encoder_states) if encoder_states is not None else len(options["input_features"])
        ids = self.model.generate(
            attention_mask=torch.ones(size, 1, dtype=torch.long, device=self.device),
            num_beams=beam_size,
            max_new_tokens=max_new_tokens,
            suppress_tokens=None,
            begin_suppress_tokens=None,
            logits_processor=LogitsProcessorList(
                [_SuppressTokens(gen.suppress_tokens or [], gen.begin_suppress_tokens or [])]
            ),
            **options,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def transcript_loss(self, encoder_states: torch.Tensor, text: str) -> torch.Tensor:
        """Mean cross-entropy per token of the frozen decoder writing `text` (teacher forcing) while reading
        `encoder_states` `(T, d)`. Differentiable in the states: the signal of `distill.decoder_weight`."""
        if self.tokenizer is None:
            raise ValueError(f"teacher {self.name} has no tokenizer; load it with load_teacher()")
        # Whisper writes a leading space before the first word; the tokenizer adds the task prefix and EOT
        ids = torch.tensor(self.tokenizer(" " + text.strip())["input_ids"], device=self.device)
        states = encoder_states[None].to(self.device, self.dtype)
        logits = self.model(encoder_outputs=(states,), decoder_input_ids=ids[None, :-1]).logits[0]
        return torch.nn.functional.cross_entropy(logits.float(), ids[1:])

    def transcribe(
        self,
        wave: Wave | Sequence[Wave],
        beam_size: int = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int = 8,
    ) -> str | list[str]:
        """English transcript of one waveform (a list of waveforms gives a list), decoded in 30-s windows.

        Windows without sound (`has_sound`: silent, or too short for a word) transcribe to nothing
        without being decoded: Whisper would answer them with a stock phrase such as "Thank you."
        """
        waves, single = self._prepare(wave)
        windows, owners = self._split(waves)
        audible = [i for i, window in enumerate(windows) if has_sound(window)]
        windows, owners = [windows[i] for i in audible], [owners[i] for i in audible]
        pieces: list[list[str]] = [[] for _ in waves]
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            mel = log_mel_batch(batch, n_mels=self.n_mels)
            for j, text in enumerate(self.decode(mel, beam_size=beam_size, max_new_tokens=max_new_tokens)):
                pieces[owners[first + j]].append(text)
        texts = [" ".join(p for p in clip if p) for clip in pieces]
        return texts[0] if single else texts


def load_teacher(
    name_or_path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> Teacher:
    """Load a frozen Whisper teacher from a registry name (converted once into the cache) or an HF folder."""
    folder = resolve_model(name_or_path)
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type != "whisper":
        raise ValueError(f"{folder}: a {model_type} model, not Whisper; the teacher must be a Whisper model")
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device)
    tokenizer = WhisperTokenizer.from_pretrained(folder)
    name = str(name_or_path) if not Path(name_or_path).expanduser().is_dir() else Path(name_or_path).name
    return Teacher(model, name=name, tokenizer=tokenizer)
