import io
import logging

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperFeatureExtractor

from aura.features import AudioError, encoder_frames, load_audio, log_mel, log_mel_batch


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
    with caplog.at_level(logging.WARNING, logger="aura.features"):
        wave = load_audio(np.zeros(1600, dtype=np.float32))
    assert wave.shape == (1600,)
    assert "silent" in caplog.text
