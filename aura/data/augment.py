"""Per-clip speaker and channel augmentation: the speakers and rooms and lines the engines do not have.

`draw_augmentation` picks, from a seeded `random.Random`, which steps a clip gets and their parameters;
the result is an `Augmentation`, stored in the manifest, and `apply` is a pure function of it, so the
same seed gives the same audio in any worker. The signal processing is sox's (speed, tempo, pitch,
reverb, band-pass, 8-kHz telephone encodings), Praat's (formant shift, through parselmouth) and
ffmpeg's (lossy codecs); numpy only mixes noise.

Order, as sound reaches a listener: the speaker (vocal-tract length, pitch, speaking rate), the room
(reverberation), noise around the speaker, then the channel (band limit, telephone, codec).
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aura.audio.features import SAMPLE_RATE
from aura.data.engines.base import SynthError, require

# Chance of each step; a clip with none of them is clean. Ranges are where Whisper tiny.en still
# transcribes most clips (docs/data.md has the measured WERs).
P_CLEAN = 0.2
P_SPEED, SPEED = 0.4, (0.9, 1.1)
P_TEMPO, TEMPO = 0.3, (0.9, 1.1)
P_PITCH, PITCH_CENTS = 0.3, (-200, 200)
P_FORMANT, FORMANT = 0.4, (0.9, 1.12)
P_REVERB, REVERBERANCE, ROOM_SCALE = 0.3, (10, 60), (20, 80)
P_NOISE, SNR_DB, NOISES = 0.4, (10.0, 30.0), ("white", "pink", "babble")
BABBLE_TALKERS = (3, 6)
# At most one channel: a band limit, a telephone line or a lossy codec (the rest of the time none).
CHANNELS = {"band": 0.2, "telephone": 0.1, "codec": 0.15}
TELEPHONE = ("mulaw", "alaw", "gsm")
LOW_CUT, HIGH_CUT = (50, 400), (2800, 7000)
CODECS = {"mp3": (16, 64), "opus": (8, 32), "vorbis": (32, 64)}  # kbps ranges
REVERB_TAIL_S = 0.3

_RAW = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]
_FFMPEG_CODEC = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg"), "vorbis": ("libvorbis", "ogg")}


class Augmentation(BaseModel):
    """What was done to one clip (a manifest field); unset steps were not applied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(description="seeds the noise and the babble offsets")
    speed: float | None = Field(default=None, description="sox speed: pitch, formants and rate together")
    tempo: float | None = Field(default=None, description="sox tempo: speaking rate only")
    pitch_cents: float | None = Field(default=None, description="sox pitch shift")
    formant: float | None = Field(
        default=None, description="Praat formant shift ratio (vocal-tract length), pitch kept"
    )
    reverb: float | None = Field(default=None, description="sox reverb reverberance, %")
    room_scale: float | None = Field(default=None, description="sox reverb room scale, %")
    noise: Literal["white", "pink", "babble"] | None = None
    snr_db: float | None = Field(default=None, description="speech-to-noise ratio of `noise`")
    babble: list[str] | None = Field(default=None, description="ids of the clips the babble is made of")
    band: tuple[int, int] | None = Field(default=None, description="band-pass edges, Hz")
    telephone: Literal["mulaw", "alaw", "gsm"] | None = Field(
        default=None, description="8-kHz telephone encoding, round trip"
    )
    codec: Literal["mp3", "opus", "vorbis"] | None = Field(
        default=None, description="lossy codec, round trip"
    )
    bitrate_kbps: int | None = None


def draw_augmentation(rng: random.Random, clips: Sequence[str], own: str = "") -> Augmentation:
    """The steps and parameters for one clip; babble is made of `clips` other than `own`."""
    seed = rng.getrandbits(32)
    if rng.random() < P_CLEAN:
        return Augmentation(seed=seed)
    steps: dict[str, object] = {}
    if rng.random() < P_SPEED:
        steps["speed"] = round(rng.uniform(*SPEED), 3)
    if rng.random() < P_TEMPO:
        steps["tempo"] = round(rng.uniform(*TEMPO), 3)
    if rng.random() < P_PITCH:
        steps["pitch_cents"] = round(rng.uniform(*PITCH_CENTS))
    if rng.random() < P_FORMANT:
        steps["formant"] = round(rng.uniform(*FORMANT), 3)
    if rng.random() < P_REVERB:
        steps["reverb"] = round(rng.uniform(*REVERBERANCE))
        steps["room_scale"] = round(rng.uniform(*ROOM_SCALE))
    if rng.random() < P_NOISE:
        others = len(clips) - (own in clips)
        kinds = NOISES if others else tuple(k for k in NOISES if k != "babble")
        steps["noise"] = rng.choice(kinds)
        steps["snr_db"] = round(rng.uniform(*SNR_DB), 1)
        if steps["noise"] == "babble":
            talkers = min(others, rng.randint(*BABBLE_TALKERS))
            picked = rng.sample(clips, min(len(clips), talkers + 1))
            steps["babble"] = [c for c in picked if c != own][:talkers]
    channel = rng.choices([*CHANNELS, None], [*CHANNELS.values(), 1 - sum(CHANNELS.values())])[0]
    if channel == "band":
        steps["band"] = (round(rng.uniform(*LOW_CUT)), round(rng.uniform(*HIGH_CUT)))
    elif channel == "telephone":
        steps["telephone"] = rng.choice(TELEPHONE)
    elif channel == "codec":
        steps["codec"] = codec = rng.choice(sorted(CODECS))
        steps["bitrate_kbps"] = rng.randint(*CODECS[codec])
    return Augmentation(seed=seed, **steps)


def _run(command: list[str], data: bytes, what: str) -> bytes:
    result = subprocess.run(command, input=data, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SynthError(f"{what} failed: {result.stderr.decode(errors='replace').strip()[-300:]}")
    return result.stdout


def _sox(wave: np.ndarray, effects: list[str]) -> np.ndarray:
    """`wave` through sox effects (16 kHz float32 in and out; -R: repeatable, no random dither)."""
    rate = ["-r", str(SAMPLE_RATE)]
    sox = require("sox", "apt-get install sox libsox-fmt-all")
    out = _run([sox, "-R", "-D", *_RAW, *rate, "-", *_RAW, *rate, "-", *effects], _f32(wave), "sox")
    return np.frombuffer(out, dtype="<f4").copy()


def _f32(wave: np.ndarray) -> bytes:
    return np.ascontiguousarray(wave, dtype="<f4").tobytes()


def _formants(wave: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Praat's "Change gender": formants scaled by `ratio` (a shorter or longer vocal tract), same pitch.

    Praat draws random numbers while resynthesising, so its generator is seeded for the call.
    """
    import parselmouth
    from parselmouth.praat import call, run

    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    try:
        run(f"random_initializeWithSeedUnsafelyButPredictably ({seed})")
        changed = call(sound, "Change gender", 75, 600, ratio, 0, 1, 1)
    except parselmouth.PraatError as err:
        raise SynthError(f"Praat could not shift the formants: {err}") from err
    finally:
        run("random_initializeSafelyAndUnpredictably ()")
    return np.asarray(changed.values[0], dtype=np.float32)


def _speech_power(wave: np.ndarray) -> float:
    voiced = wave[np.abs(wave) > 0.02 * np.abs(wave).max()]
    return float(np.mean((voiced if voiced.size else wave) ** 2))


def pink_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with power falling 3 dB per octave (1/f), shaped from white noise in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n=size).astype(np.float32)


def babble_noise(size: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Several other clips at equal loudness, each looped from a random start: a crowd talking."""
    total = np.zeros(size, dtype=np.float32)
    for talker in talkers:
        loop = np.resize(talker, size + talker.size)
        start = int(rng.integers(talker.size))
        total += loop[start : start + size] / np.sqrt(_speech_power(talker) + 1e-12)
    return total


def add_noise(
    wave: np.ndarray, snr_db: float, rng: np.random.Generator, noise: np.ndarray | None = None
) -> np.ndarray:
    """`noise` (white when None) at `snr_db` relative to the clip's speech power (silence excluded)."""
    target = _speech_power(wave) / 10 ** (snr_db / 10)
    if noise is None:  # unit-variance white noise
        return wave + rng.standard_normal(wave.size).astype(np.float32) * np.sqrt(target)
    return wave + noise * np.sqrt(target / (float(np.mean(noise**2)) + 1e-12))


def _telephone(wave: np.ndarray, encoding: str) -> np.ndarray:
    """Down to 8 kHz in a telephone encoding and back up to 16 kHz."""
    sox = require("sox", "apt-get install sox libsox-fmt-all")
    rate = ["-r", str(SAMPLE_RATE)]
    line = (
        ["-t", "gsm"]
        if encoding == "gsm"
        else ["-t", "wav", "-e", {"mulaw": "u-law", "alaw": "a-law"}[encoding]]
    )
    coded = _run([sox, "-R", "-D", *_RAW, *rate, "-", *line, "-r", "8000", "-c", "1", "-"], _f32(wave), "sox")
    back = _run([sox, "-R", "-D", *line, "-r", "8000", "-c", "1", "-", *_RAW, *rate, "-"], coded, "sox")
    return np.frombuffer(back, dtype="<f4").copy()


def _codec(wave: np.ndarray, codec: str, kbps: int) -> np.ndarray:
    """Encode with ffmpeg at `kbps` and decode back to 16-kHz float32."""
    ffmpeg = require("ffmpeg", "apt-get install ffmpeg")
    encoder, container = _FFMPEG_CODEC[codec]
    pcm = ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
    quiet = [ffmpeg, "-nostdin", "-v", "error"]
    coded = _run(
        [*quiet, *pcm, "-i", "pipe:0", "-c:a", encoder, "-b:a", f"{kbps}k", "-f", container, "pipe:1"],
        _f32(wave),
        f"ffmpeg {codec} encoding",
    )
    back = _run([*quiet, "-i", "pipe:0", *pcm, "pipe:1"], coded, f"ffmpeg {codec} decoding")
    return np.frombuffer(back, dtype="<f4").copy()


def apply(wave: np.ndarray, aug: Augmentation, babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """`wave` (16-kHz float32) with `aug`'s steps; `babble` are the clips named in `aug.babble`."""
    if aug.formant is not None:
        wave = _formants(wave, aug.formant, aug.seed)
    effects: list[str] = []
    if aug.speed is not None:
        effects += ["speed", str(aug.speed)]
    if aug.tempo is not None:
        effects += ["tempo", "-s", str(aug.tempo)]
    if aug.pitch_cents is not None:
        effects += ["pitch", str(aug.pitch_cents)]
    if aug.reverb is not None:
        effects += ["pad", "0", str(REVERB_TAIL_S), "reverb", str(aug.reverb), "50", str(aug.room_scale)]
    if effects:
        wave = _sox(wave, effects)
    if aug.noise is not None and aug.snr_db is not None:
        rng = np.random.default_rng(aug.seed)
        if aug.noise == "white":
            noise = None
        elif aug.noise == "pink":
            noise = pink_noise(wave.size, rng)
        else:
            if len(babble) != len(aug.babble or ()):
                raise ValueError(
                    f"babble needs the {len(aug.babble or ())} clips it names, got {len(babble)}"
                )
            noise = babble_noise(wave.size, babble, rng)
        wave = add_noise(wave, aug.snr_db, rng, noise)
    wave = wave * min(1.0, 0.99 / max(float(np.abs(wave).max()), 1e-6))  # no clipping in the encoders
    if aug.band is not None:
        wave = _sox(wave, ["sinc", f"{aug.band[0]}-{aug.band[1]}"])
    if aug.telephone is not None:
        wave = _telephone(wave, aug.telephone)
    if aug.codec is not None and aug.bitrate_kbps is not None:
        wave = _codec(wave, aug.codec, aug.bitrate_kbps)
    return wave.astype(np.float32)
