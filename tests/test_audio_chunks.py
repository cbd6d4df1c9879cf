from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tone_clip

from aura.audio.chunks import ChunkedMel, causal_log_mel, chunk_frames, floor_to_running_peak
from aura.audio.features import log_mel
from aura.config import ConfigError


def test_chunk_frames_are_whole_tokens() -> None:
    assert chunk_frames(0.96, 4) == 48 and chunk_frames(0.08, 4) == 4 and chunk_frames(2.0, 5) == 100
    with pytest.raises(
        ConfigError, match=r"audio_chunk_seconds=1: .*model.k=4.*multiple of 0.08 s.*nearest is 0.96"
    ):
        chunk_frames(1.0, 4)
    with pytest.raises(ConfigError, match="audio_chunk_seconds=0"):
        chunk_frames(0.0, 4)


def test_causal_log_mel_is_whispers_floored_at_the_running_peak() -> None:
    wave = tone_clip(1.3, 3)
    wave[:800] = 0.0  # 50 ms of digital silence before the sound: floored lower until the peak arrives
    whisper, causal = log_mel(wave, pad_to_30s=False), causal_log_mel(wave)
    assert causal.shape == whisper.shape
    # Whisper's own frames, floored at the running peak instead of the clip's: undo its normalisation
    raw = whisper * 4.0 - 4.0
    peak = raw.max()
    unfloored = raw > peak - 8.0 + 1e-4
    assert torch.allclose(causal[unfloored], whisper[unfloored], atol=1e-6)
    assert (causal[:, :4] < whisper[:, :4]).any()  # the silence, before any peak
    # from the frame holding the clip's peak on, the running peak is the clip's: the features are Whisper's
    peak_frame = int(raw.amax(0).argmax())
    assert torch.allclose(causal[:, peak_frame:], whisper[:, peak_frame:], atol=1e-6)


@pytest.mark.parametrize("piece", [1, 159, 320, 4321])
def test_chunked_mel_equals_the_whole_clip(piece: int) -> None:
    wave = np.concatenate([np.zeros(300, dtype=np.float32), tone_clip(0.7, 8)])
    stream = ChunkedMel(80)
    for start in range(0, len(wave), piece):
        stream.add(wave[start : start + piece])
        ready = stream.ready()
        # a frame is ready only once every sample it reads has arrived
        assert ready == 0 or (ready - 1) * 160 + 200 <= stream.samples.numel()
        stream.extend(ready)
    stream.end()
    stream.extend(stream.ready())
    assert torch.allclose(stream.mel, causal_log_mel(wave), atol=1e-5)
    with pytest.raises(ValueError, match="ended"):
        stream.add(wave[:10])


def test_frames_past_the_samples_are_refused() -> None:
    stream = ChunkedMel(80)
    stream.add(np.zeros(1000, dtype=np.float32))
    with pytest.raises(ValueError, match="not received yet"):
        stream.extend(stream.ready() + 1)


def test_running_peak_carries_across_calls() -> None:
    spectrum = torch.tensor([[0.0, -9.0, 1.0, -9.0]])
    whole, peak = floor_to_running_peak(spectrum)
    first, mid = floor_to_running_peak(spectrum[:, :2])
    second, _ = floor_to_running_peak(spectrum[:, 2:], mid)
    assert torch.equal(torch.cat([first, second], dim=1), whole) and peak == 1.0
    assert whole[0, 1] == (-8.0 + 4) / 4 and whole[0, 3] == (-7.0 + 4) / 4
