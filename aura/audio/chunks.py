"""Audio read in chunks: the chunk geometry of chunk-causal attention, and a log-mel a stream can compute.

A model trained with `model.audio_attention=chunk-causal` reads its audio in chunks of
`model.audio_chunk_seconds`: attention is bidirectional inside a chunk and causal from one chunk to the
next, so a chunk's embeddings never depend on audio after it, and a stream can put each chunk through the
LLM as soon as it has been spoken. Two parts of Whisper's front end look past a chunk's end and are
handled here so that streamed and offline features are the same numbers:

- Whisper's log-mel floors every value at 8 decades below the *clip's* peak, a statistic no stream has
  before the end. `causal_log_mel` floors each frame at 8 decades below the running peak of the frames
  up to it instead; a chunk-causal model trains and answers on this feature, offline and streamed.
- A mel frame is the STFT window centred on its hop (`N_FFT / 2` samples either side), and the embedding's
  conv stem reads one mel frame past its last encoder frame. So the last frames of a chunk wait for 12.5 ms
  of the next chunk's audio (`ChunkedMel.ready`), or for the end of the clip, where the zeros Whisper pads
  with stand in, as offline.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from aura.audio.features import HOP_LENGTH, N_FFT, SAMPLES_PER_ENCODER_FRAME, _mel_filters, encoder_frames
from aura.config import ConfigError

ENCODER_HZ = 50  # encoder frames per second
HALF_WINDOW = N_FFT // 2  # samples a mel frame reads past its centre
DYNAMIC_RANGE = 8.0  # log10 decades Whisper keeps below the peak


def chunk_frames(seconds: float, k: int) -> int:
    """Encoder frames per chunk of `seconds`; a `ConfigError` unless a chunk is a whole number of k-frame
    audio tokens (a token straddling two chunks would see part of the next one)."""
    frames = seconds * ENCODER_HZ
    if seconds > 0 and math.isclose(frames, round(frames), abs_tol=1e-6) and round(frames) % k == 0:
        return round(frames)
    step = k / ENCODER_HZ
    near = max(1, round(seconds / step)) * step if seconds > 0 else step
    raise ConfigError(
        f"model.audio_chunk_seconds={seconds:g}: a chunk must be a whole number of audio tokens of "
        f"model.k={k} frames at {ENCODER_HZ} frames/s, i.e. a positive multiple of {step:g} s "
        f"(the nearest is {near:g})."
    )


def log_spectrum(samples: torch.Tensor, start: int, stop: int, n_mels: int) -> torch.Tensor:
    """log10 mel power `(n_mels, stop - start)` of mel frames [start, stop), before the dynamic-range floor.

    Frame t is the window centred on sample `t * HOP_LENGTH`, the start of the clip reflected as
    `torch.stft(center=True)` does, so the frames equal those of `log_mel_batch`. `samples` must reach
    `(stop - 1) * HOP_LENGTH + N_FFT / 2` (and hold more than `N_FFT / 2` samples when `start` is 0).
    """
    left, right = start * HOP_LENGTH - HALF_WINDOW, (stop - 1) * HOP_LENGTH + HALF_WINDOW
    if right > samples.numel() or (left < 0 and samples.numel() <= -left):
        raise ValueError(f"mel frames [{start}, {stop}) need {right} samples; {samples.numel()} are known.")
    # before the first sample, the clip reflected about it (torch.stft's `reflect` padding)
    head = samples[1 : 1 - left].flip(0) if left < 0 else samples[:0]
    segment = torch.cat([head, samples[max(left, 0) : right]])
    stft = torch.stft(
        segment, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), center=False, return_complex=True
    )
    mel = _mel_filters(n_mels) @ stft.abs() ** 2
    return mel.clamp(min=1e-10).log10()


def floor_to_running_peak(spectrum: torch.Tensor, peak: float = -math.inf) -> tuple[torch.Tensor, float]:
    """Whisper's normalisation with each frame floored below the running peak up to it (`peak`: that of
    the frames before these). Returns the features and the running peak after the last frame."""
    peaks = torch.cummax(spectrum.amax(0), 0).values.clamp(min=peak)
    floored = torch.maximum(spectrum, peaks - DYNAMIC_RANGE)
    return (floored + 4.0) / 4.0, float(peaks[-1])


def padded_clip(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The clip as the log-mel reads it: zero-padded to whole encoder frames, plus a half window of zeros."""
    wave = torch.as_tensor(wave, dtype=torch.float32).flatten()
    length = encoder_frames(wave.numel()) * SAMPLES_PER_ENCODER_FRAME
    out = torch.zeros(length + HALF_WINDOW)
    out[: min(wave.numel(), length)] = wave[:length]
    return out


def causal_log_mel(wave: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """The unpadded log-mel `(n_mels, 2 * encoder_frames(n))` of a chunk-causal model: Whisper's, each frame
    floored at the running peak instead of the clip's (see the module docstring)."""
    samples = padded_clip(wave)
    frames = 2 * ((samples.numel() - HALF_WINDOW) // SAMPLES_PER_ENCODER_FRAME)
    return floor_to_running_peak(log_spectrum(samples, 0, frames, n_mels))[0]


class ChunkedMel:
    """`causal_log_mel` of one clip, computed as its samples arrive.

    `add` appends samples; `extend(stop)` computes the mel frames up to `stop` (no further than `ready`);
    `end()` marks the clip complete, after which every frame can be computed (the tail padded with zeros
    as `causal_log_mel` pads it). `mel` holds the frames computed so far.
    """

    def __init__(self, n_mels: int) -> None:
        self.n_mels = n_mels
        self.samples = torch.zeros(0)
        self.mel = torch.zeros(n_mels, 0)
        self.peak = -math.inf
        self.ended = False

    @property
    def num_samples(self) -> int:
        return self.samples.numel() - (HALF_WINDOW if self.ended else 0)

    def add(self, samples: np.ndarray | torch.Tensor) -> None:
        if self.ended:
            raise ValueError("the clip has ended; no more samples can be added.")
        self.samples = torch.cat([self.samples, torch.as_tensor(samples, dtype=torch.float32).flatten()])

    def end(self) -> None:
        """The clip is complete: pad it as `causal_log_mel` does."""
        if not self.ended:
            self.samples = padded_clip(self.samples)
            self.ended = True

    @property
    def total_frames(self) -> int | None:
        """Mel frames of the whole clip once it has ended (None before)."""
        return 2 * encoder_frames(self.num_samples) if self.ended else None

    def ready(self) -> int:
        """Mel frames computable from the samples so far (all of them once the clip has ended)."""
        if self.ended:
            return self.total_frames  # type: ignore[return-value]
        known = self.samples.numel()
        return 0 if known <= HALF_WINDOW else (known - HALF_WINDOW) // HOP_LENGTH + 1

    def extend(self, stop: int) -> None:
        """Compute mel frames up to `stop` (those not computed yet)."""
        start = self.mel.shape[1]
        if stop <= start:
            return
        if stop > self.ready():
            raise ValueError(
                f"mel frame {stop - 1} needs samples not received yet ({self.ready()} frames ready)."
            )
        features, self.peak = floor_to_running_peak(
            log_spectrum(self.samples, start, stop, self.n_mels), self.peak
        )
        self.mel = torch.cat([self.mel, features], dim=1)
