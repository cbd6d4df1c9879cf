"""Audio in: decoding, integrity, resampling and Whisper's log-mel spectrogram.

Everything downstream (teacher, embedding layer, server, manifests) sees float32 mono 16-kHz numpy
arrays, so the format questions are answered once, here, with errors that name the input and say what
to do. That includes files that decode but are damaged: a WAV or FLAC whose header promises more audio
than the file holds (an interrupted copy or download) is refused with both durations, because its
decodable start is a different, shorter clip; and data labelled as one format but holding another.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from transformers.audio_utils import mel_filter_bank

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # mel frames at 100 Hz
N_FFT = 400
SAMPLES_PER_ENCODER_FRAME = 2 * HOP_LENGTH  # the encoder's stride-2 conv gives 50 Hz
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_MEL_FRAMES = WINDOW_SAMPLES // HOP_LENGTH  # 3000
SILENCE_RMS = 1e-3  # -60 dBFS: below this a clip holds no speech a model could hear
MIN_SOUND_SECONDS = 0.1  # shorter than this no word fits; Whisper invents one ("Thank you.")
STREAMED_WAV_SIZE = 0x7FFF0000  # about 2 GiB: a data size this large is a streaming writer's placeholder
# libsndfile's format names -> the names clients use (OpenAI's input_audio `format`)
FORMAT_NAMES = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}

log = logging.getLogger(__name__)

AudioSource = str | Path | bytes | bytearray | np.ndarray


class AudioError(ValueError):
    """Audio that cannot be used, with a message naming the input and the problem."""


class AudioFormatError(AudioError):
    """The data is readable audio, but not in the format it was declared to be."""


def _describe(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray):
        return f"<{len(source)} bytes of audio>"
    return "<waveform array>"


def load_audio(
    source: AudioSource,
    *,
    max_seconds: float | None = None,
    name: str | None = None,
    expected_format: str | None = None,
) -> np.ndarray:
    """Decode a file path, encoded bytes (wav/flac/ogg/mp3) or a 16-kHz array to float32 mono 16 kHz.

    Arrays are taken to be 16 kHz already (there is no rate to read from them). Silence is allowed but
    warned about: a silent clip is legal input, yet it is usually a recording mistake. A truncated file
    is an `AudioError`; so is encoded data whose format is not `expected_format` (`AudioFormatError`).
    """
    label = _describe(source, name)
    if isinstance(source, np.ndarray):
        wave, rate = source, SAMPLE_RATE
        if wave.ndim == 2:
            wave = wave.mean(axis=1 if wave.shape[1] <= 8 else 0)
        if wave.ndim != 1:
            raise AudioError(f"{label}: expected a 1-D waveform, got an array of shape {source.shape}.")
        if not np.issubdtype(wave.dtype, np.floating):
            raise AudioError(f"{label}: expected float samples in [-1, 1], got dtype {wave.dtype}.")
    else:
        wave, rate = _decode(source, label, expected_format)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples). Record or export it again.")
    if not np.isfinite(wave).all():
        raise AudioError(f"{label}: the audio has NaN or infinite samples; the file is damaged.")
    if rate != SAMPLE_RATE:
        wave = soxr.resample(wave, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    seconds = wave.size / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{label}: the clip is {seconds:.1f} s long, over the limit of {max_seconds:g} s. "
            "Cut it into shorter clips or raise the limit."
        )
    if _rms(wave) < SILENCE_RMS:
        log.warning("%s: the audio is silent (RMS below %g).", label, SILENCE_RMS)
    return wave


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def has_sound(wave: np.ndarray) -> bool:
    """Whether a 16-kHz clip could hold speech: long enough for a word and above the silence level.

    Transcribers skip clips without sound instead of decoding them, since Whisper answers near-empty or
    silent input with a stock phrase rather than nothing.
    """
    return wave.size >= MIN_SOUND_SECONDS * SAMPLE_RATE and _rms(wave) >= SILENCE_RMS


def _wav_shortfall(head: bytes, size: int) -> tuple[int, int] | None:
    """(declared, held) frames when a RIFF/WAVE header's data chunk is longer than the file; else None.

    Writers that stream a WAV before knowing its length leave a placeholder size: 0, or 2 GiB and up
    (0x7FFFF000 from espeak-ng, 0xFFFFFFFF); those mean "unknown" and are never a shortfall.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, rate, block = 12, 0, 0
    while position + 8 <= len(head):
        chunk, length = (
            head[position : position + 4],
            struct.unpack("<I", head[position + 4 : position + 8])[0],
        )
        body = position + 8
        if chunk == b"fmt " and body + 14 <= len(head):
            rate = struct.unpack("<I", head[body + 4 : body + 8])[0]
            block = struct.unpack("<H", head[body + 12 : body + 14])[0]
        elif chunk == b"data":
            held = size - body
            if not rate or not block or length == 0 or length >= STREAMED_WAV_SIZE or length - held < block:
                return None
            return length // block, max(held, 0) // block
        position = body + length + (length & 1)
    return None


def _decode(
    source: str | Path | bytes | bytearray, label: str, expected_format: str | None = None
) -> tuple[np.ndarray, int]:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{label}: no such file.")
        handle: Path | io.BytesIO = path
    else:
        if len(source) == 0:
            raise AudioError(f"{label}: the audio data is empty.")
        handle = io.BytesIO(bytes(source))
    try:
        with sf.SoundFile(handle) as audio:
            kind, declared = FORMAT_NAMES.get(audio.format, audio.format.lower()), audio.frames
            wave = audio.read(dtype="float32", always_2d=True)
            rate = int(audio.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{label}: not a readable audio file ({err}). Use WAV, FLAC, OGG or MP3.") from err
    if expected_format is not None and kind != expected_format.lower():
        raise AudioFormatError(
            f"{label}: declared as {expected_format!r} but the data is {kind}; "
            f"declare format {kind!r} or send {expected_format} data."
        )
    if isinstance(handle, Path):
        with handle.open("rb") as raw:
            head, size = raw.read(1 << 16), handle.stat().st_size
    else:
        head, size = handle.getvalue()[: 1 << 16], len(handle.getvalue())
    # libsndfile quietly clips a WAV's data length to the file; other containers report what they declare
    shortfall = _wav_shortfall(head, size)
    if shortfall is None and kind not in ("wav", "mp3") and len(wave) < declared:
        shortfall = declared, len(wave)  # mp3's frame count is an estimate: not compared
    if shortfall is not None:
        message = (
            f"{label}: the file is truncated: its header declares {shortfall[0] / rate:.3f} s of audio but it "
            f"holds only {shortfall[1] / rate:.3f} s"
        )
        if shortfall[0] - shortfall[1] > rate // 100:  # more than 10 ms missing: not the clip it claims to be
            raise AudioError(f"{message}. Copy, download or export it again.")
        log.warning("%s; using what it holds.", message)
    return wave.mean(axis=1), rate


def encoder_frames(num_samples: int) -> int:
    """Number of 50-Hz Whisper encoder frames that carry a clip of `num_samples` samples."""
    return max(1, math.ceil(num_samples / SAMPLES_PER_ENCODER_FRAME))


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> torch.Tensor:
    filters = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters.T.astype(np.float32))  # (n_mels, freq)


def log_mel_batch(
    waves: list[np.ndarray | torch.Tensor], n_mels: int = 80, pad_to_30s: bool = True
) -> torch.Tensor:
    """Whisper log-mel for a batch: `(B, n_mels, 3000)` padded, or `(B, n_mels, 2 * max frames)` unpadded.

    Padded output equals transformers' `WhisperFeatureExtractor`. Unpadded, each clip is zero-padded to
    a whole number of encoder frames, which reproduces the first frames of the padded window.
    """
    if pad_to_30s:
        length, tail = WINDOW_SAMPLES, 0
    else:
        # Zeros past the end (not STFT's reflection) make the last frames equal the padded window's.
        length, tail = max(encoder_frames(len(w)) for w in waves) * SAMPLES_PER_ENCODER_FRAME, N_FFT // 2
    batch = torch.zeros(len(waves), length + tail)
    for i, wave in enumerate(waves):
        wave = torch.as_tensor(wave, dtype=torch.float32)[:length]
        batch[i, : wave.numel()] = wave
    stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., : length // HOP_LENGTH].abs() ** 2
    mel = _mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel(wave: np.ndarray | torch.Tensor, n_mels: int = 80, pad_to_30s: bool = True) -> torch.Tensor:
    """Whisper log-mel of one clip: `(n_mels, 3000)` padded, or `(n_mels, 2 * encoder_frames(n))`."""
    return log_mel_batch([wave], n_mels=n_mels, pad_to_30s=pad_to_30s)[0]
