"""Augmentation: seeded draws, deterministic audio, and each step does what its record says."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aura.audio.features import SAMPLE_RATE
from aura.data.augment import (
    Augmentation,
    add_noise,
    apply,
    babble_noise,
    draw_augmentation,
    pink_noise,
)
from aura.data.engines import get_engine

CLIPS = [f"clip-{i}" for i in range(20)]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real speech: two seconds of espeak with silence around it."""
    wave = get_engine("espeak").speak(
        "Seven silver swans swam over the lake.", "en-us", {"rate": 160, "pitch": 50}
    )
    return np.pad(wave * (0.6 / np.abs(wave).max()), SAMPLE_RATE // 4)


def _band_energy(wave: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SAMPLE_RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def test_draws_are_seeded_varied_and_valid() -> None:
    draws = [draw_augmentation(random.Random(f"s/{i}"), CLIPS, own=CLIPS[i % 20]) for i in range(300)]
    again = [draw_augmentation(random.Random(f"s/{i}"), CLIPS, own=CLIPS[i % 20]) for i in range(300)]
    assert draws == again
    fields = {k for d in draws for k, v in d.model_dump().items() if v is not None}
    assert fields == set(Augmentation.model_fields)  # every step gets used
    assert sum(d.model_dump(exclude_none=True).keys() == {"seed"} for d in draws) > 20  # some clean clips
    for i, d in enumerate(draws):
        channels = [d.band is not None, d.telephone is not None, d.codec is not None]
        assert sum(channels) <= 1
        if d.noise == "babble":
            assert d.babble and CLIPS[i % 20] not in d.babble and set(d.babble) <= set(CLIPS)
    assert Augmentation.model_validate_json(draws[0].model_dump_json()) == draws[0]
    lone = [draw_augmentation(random.Random(i), ["only"], own="only") for i in range(200)]
    assert all(d.noise != "babble" for d in lone)  # no other clip to make babble of


def test_apply_is_deterministic_for_every_step(speech: np.ndarray) -> None:
    talkers = [np.roll(speech, 3000), np.roll(speech, 9000), speech[::-1].copy()]
    full = Augmentation(
        seed=7, speed=1.05, tempo=0.95, pitch_cents=120, formant=1.1, reverb=40, room_scale=50,
        noise="babble", snr_db=15, babble=["a", "b", "c"],
    )  # fmt: skip
    for aug, babble in [
        (full, talkers),
        (Augmentation(seed=1, noise="pink", snr_db=20, telephone="gsm"), []),
        (Augmentation(seed=2, band=(300, 3400), codec="opus", bitrate_kbps=12), []),
        (Augmentation(seed=3, telephone="mulaw", codec="mp3", bitrate_kbps=24), []),
    ]:
        first, second = apply(speech, aug, babble), apply(speech, aug, babble)
        assert first.dtype == np.float32 and np.array_equal(first, second), aug
        assert not np.allclose(first[: speech.size], speech[: first.size], atol=1e-3)
    other_seed = apply(speech, full.model_copy(update={"seed": 8}), talkers)
    assert not np.array_equal(apply(speech, full, talkers), other_seed)
    assert np.array_equal(apply(speech, Augmentation(seed=0)), speech)  # a clean clip stays clean


def test_steps_change_what_they_should(speech: np.ndarray) -> None:
    fast = apply(speech, Augmentation(seed=0, tempo=1.25))
    assert abs(fast.size / speech.size - 0.8) < 0.02  # tempo: shorter
    slow = apply(speech, Augmentation(seed=0, speed=0.9))
    assert abs(slow.size / speech.size - 1 / 0.9) < 0.02  # speed: longer
    assert apply(speech, Augmentation(seed=0, formant=1.1)).size == speech.size  # formants: same length
    phone = apply(speech, Augmentation(seed=0, telephone="alaw"))
    assert _band_energy(speech, 4200, 8000) > 1e-3 and _band_energy(phone, 4200, 8000) < 1e-4
    band = apply(speech, Augmentation(seed=0, band=(500, 3000)))
    assert _band_energy(band, 0, 300) < 0.2 * _band_energy(speech, 0, 300)
    roomy = apply(speech, Augmentation(seed=0, reverb=80, room_scale=90))
    assert roomy.size > speech.size  # the reverb tail


def test_noise_kinds_at_the_requested_snr(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    pink = pink_noise(64000, rng)
    low, high = _band_energy(pink, 50, 500), _band_energy(pink, 4000, 7500)
    assert low > 2 * high  # 1/f: more power low down than white noise's equal share
    talkers = [np.roll(speech, k) for k in (5000, 11000, 17000)]
    for noise in (None, pink_noise(speech.size, rng), babble_noise(speech.size, talkers, rng)):
        noisy = add_noise(speech, 12.0, rng, noise)
        voiced = np.abs(speech) > 0.02 * np.abs(speech).max()
        signal = np.mean(speech[voiced] ** 2)
        snr = 10 * np.log10(signal / np.mean((noisy - speech) ** 2))
        assert abs(snr - 12.0) < 0.5
