import io
import logging

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperFeatureExtractor

from aura.audio.features import (
    AudioError,
    AudioFormatError,
    encoder_frames,
    has_sound,
    load_audio,
    log_mel,
    log_mel_batch,
)


def _tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_whisper_feature_extractor(n_mels: int) -> None:
    wave = np.random.default_rng(0).standard_normal(16_000 * 3 + 77).astype(np.float32) * 0.1
    reference = WhisperFeatureExtractor(feature_size=n_mels)(wave, sampling_rate=16_000, return_tensors="np")
    ours = log_mel(wave, n_mels=n_mels).numpy()
    assert ours.shape == (n_mels, 3000)
    np.testing.assert_allclose(ours, reference.input_features[0], atol=1e-5)


def test_unpadded_log_mel_is_the_start_of_the_padded_window() -> None:
    wave = _tone(2.3)
    frames = encoder_frames(len(wave))
    assert frames == 115
    short = log_mel(wave, pad_to_30s=False)
    assert short.shape == (80, 2 * frames)
    np.testing.assert_allclose(short.numpy(), log_mel(wave)[:, : 2 * frames].numpy(), atol=1e-5)
    batch = log_mel_batch([wave, _tone(1.0)], pad_to_30s=False)
    assert batch.shape == (2, 80, 2 * frames)


def test_load_audio_resamples_and_mixes_down(tmp_path) -> None:
    rate = 22_050
    stereo = np.stack([_tone(1.0, rate), _tone(1.0, rate)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, rate)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16_000) <= 1
    buffer = io.BytesIO()
    sf.write(buffer, _tone(0.5), 16_000, format="FLAC")
    assert len(load_audio(buffer.getvalue())) == 8_000


def test_load_audio_errors_name_the_file_and_problem(tmp_path) -> None:
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        load_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="corrupt.wav: not a readable audio file"):
        load_audio(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(np.array([0.1, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="over the limit of 2 s"):
        load_audio(_tone(3.0), max_seconds=2)
    with pytest.raises(AudioError, match="float samples"):
        load_audio(np.zeros(100, dtype=np.int16))


def test_silent_audio_is_allowed_but_warned(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="aura.audio.features"):
        wave = load_audio(np.zeros(1600, dtype=np.float32))
    assert wave.shape == (1600,)
    assert "silent" in caplog.text


def _encoded(wave: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, 16_000, format=fmt)
    return buffer.getvalue()


def test_truncated_files_are_refused_with_both_durations(tmp_path, caplog) -> None:
    """A header promising more audio than the file holds (an interrupted copy): the decodable start is a
    different clip, so it is refused, naming the file, the declared and the held duration."""
    whole = _encoded(_tone(2.0), "WAV")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:3000])
    with pytest.raises(
        AudioError, match=r"cut.wav: the file is truncated: .* declares 2.000 s .* only 0.092 s"
    ):
        load_audio(cut)
    with pytest.raises(AudioError, match="truncated"):
        load_audio(whole[: len(whole) // 2], name="half")
    with caplog.at_level(
        logging.WARNING, logger="aura.audio.features"
    ):  # a few samples short: used, with a warning
        assert len(load_audio(whole[:-4], name="nearly")) == 32_000 - 2
    assert "nearly: the file is truncated" in caplog.text
    flac = _encoded(_tone(2.0), "FLAC")
    with pytest.raises(AudioError, match="cut.flac"):
        load_audio(flac[: len(flac) // 2], name="cut.flac")
    for unknown in (b"\xff\xff\xff\xff", b"\x00\xf0\xff\x7f"):  # "length unknown", as streaming writers
        streamed = bytearray(whole)  # leave it (espeak-ng writing to a pipe: 0x7FFFF000)
        streamed[40:44] = unknown
        assert len(load_audio(bytes(streamed))) == 32_000


def test_declared_format_must_match_the_data() -> None:
    wav, flac, mp3 = (_encoded(_tone(0.5), fmt) for fmt in ("WAV", "FLAC", "MP3"))
    assert len(load_audio(wav, expected_format="wav")) == 8_000
    assert len(load_audio(flac, expected_format="flac")) == 8_000
    assert abs(len(load_audio(mp3, expected_format="mp3")) - 8_000) < 2_000
    with pytest.raises(AudioFormatError, match="declared as 'mp3' but the data is wav"):
        load_audio(wav, expected_format="mp3")
    with pytest.raises(AudioFormatError, match="declared as 'wav' but the data is flac"):
        load_audio(flac, expected_format="wav")


def test_has_sound_rejects_silence_and_near_empty_clips() -> None:
    assert has_sound(_tone(0.5))
    assert not has_sound(_tone(0.09))  # too short for a word
    assert not has_sound(np.zeros(16_000, dtype=np.float32))
    assert not has_sound(1e-4 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32))
