"""Synthesis engines: each speaks 16-kHz mono English that the real Whisper tiny.en understands."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from aura.audio.features import SAMPLE_RATE
from aura.data.engines import ENGINES, SynthError, get_engine
from aura.metrics import error_rates, normalize_transcript

TEXTS = ("Please close the window before you leave.", "We will meet at the station tomorrow morning.")


def test_registry_names_every_engine_and_rejects_unknown_ones() -> None:
    assert set(ENGINES) == {"espeak", "piper", "flite", "festival", "kokoro", "hibari"}
    with pytest.raises(ValueError, match="unknown synthesis engine 'nope'.*espeak"):
        get_engine("nope")
    for engine in ENGINES.values():  # a held-out voice is never a training voice of the same engine
        assert engine.voices["train"] and not set(engine.voices["train"]) & set(engine.voices["heldout"])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_unknown_voice_is_a_clear_error(name: str) -> None:
    with pytest.raises(SynthError, match="no-such-voice"):
        get_engine(name).check(["no-such-voice"])


def test_draws_are_seeded() -> None:
    for engine in ENGINES.values():
        voices = engine.voices_for("train", "train")
        assert engine.draw(random.Random(3), voices) == engine.draw(random.Random(3), voices)


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_engine_speaks_what_whisper_hears(name: str) -> None:
    from aura.teacher.whisper import load_teacher

    engine = get_engine(name)
    rng = random.Random(0)
    waves = []
    for text, voice in zip(TEXTS, [*engine.voices["train"], *engine.voices["heldout"]] * 2, strict=False):
        engine.check([voice])
        _, settings = engine.draw(rng, [voice])
        wave = engine.speak(text, voice, settings)
        assert wave.dtype == np.float32 and wave.ndim == 1  # mono, at the 16-kHz rate every clip uses
        assert 1.0 < wave.size / SAMPLE_RATE < 6.0 and np.abs(wave).max() > 0.05
        waves.append(np.pad(wave * (0.7 / np.abs(wave).max()), SAMPLE_RATE // 4))
    heard = load_teacher("whisper-tiny.en").transcribe(waves)
    wer = error_rates([normalize_transcript(t) for t in TEXTS], heard).wer
    assert wer <= 0.1, (name, heard)


def test_espeak_trains_on_exactly_the_voices_measured_intelligible() -> None:
    """`TRAIN_VOICES` is what `benchmarks/espeak_voices.py` measured, not a hand-picked list."""
    from aura.data.engines.espeak import INTELLIGIBLE_WER, TRAIN_VOICES, candidates

    measured = json.loads((Path(__file__).parents[1] / "benchmarks/results/espeak_voices.json").read_text())
    train = set(candidates("train"))
    assert train <= set(measured["wer"]) and measured["intelligible_wer"] == INTELLIGIBLE_WER
    assert set(TRAIN_VOICES) == {v for v in train if measured["wer"][v] <= INTELLIGIBLE_WER}


def test_kokoro_reads_espeak_ipa_in_its_own_alphabet() -> None:
    from aura.data.engines.kokoro import _model, phonemes

    said = phonemes("Judge the choice of joy over the vowel sound now.")
    assert {"ʤ", "ʧ", "Y", "O", "W"} <= set(said)  # affricates and diphthongs are one symbol each
    assert "dʒ" not in said and "tʃ" not in said and "ː" not in said
    assert set(said) <= set(_model()[1])  # nothing the model would silently drop


def test_kokoro_is_deterministic_and_blends_voices() -> None:
    engine = get_engine("kokoro")
    pure = {"blend": "jm_kumo", "blend_weight": 0.0, "speed": 1.0}
    first, again = (engine.speak(TEXTS[0], "jf_alpha", pure) for _ in range(2))
    assert np.array_equal(first, again)
    blended = engine.speak(TEXTS[0], "jf_alpha", {**pure, "blend_weight": 0.5})
    assert blended.shape != first.shape or not np.allclose(blended, first, atol=1e-3)


def test_hibari_is_reproducible_from_its_seed() -> None:
    """The noise excitation is seeded per clip, so a manifest's settings remake its audio exactly."""
    engine = get_engine("hibari")
    settings = {"speed": 1.0, "seed": 7}
    first, again = (engine.speak(TEXTS[1], "heart", settings) for _ in range(2))
    assert np.array_equal(first, again)
    other = engine.speak(TEXTS[1], "heart", {**settings, "seed": 8})
    assert other.shape != first.shape or not np.array_equal(other, first)
    slower = engine.speak(TEXTS[1], "heart", {**settings, "speed": 0.85})
    assert slower.size > first.size * 1.1
