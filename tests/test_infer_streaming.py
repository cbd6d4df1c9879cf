from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tone_clip

from aura.audio.features import load_audio
from aura.data.manifest import read_manifest
from aura.data.synth import synthesize
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationResult, RequestError
from aura.infer.streaming import StreamingError

MAX_NEW = 10


@pytest.fixture(scope="module")
def chunked(chunked_run: Path) -> AuraModel:
    return AuraModel.from_pretrained(chunked_run)


def _streamed(
    model: AuraModel, wave: np.ndarray, piece: int, prompt: str | None = None
) -> tuple[str, GenerationResult]:
    session = model.open_stream(prompt, max_new_tokens=MAX_NEW)
    for start in range(0, len(wave), piece):
        session.feed(wave[start : start + piece])
    text = "".join(session.finish())
    assert session.result is not None and session.result.text == text
    return text, session.result


@pytest.mark.parametrize("piece", [160, 1234, 16_000])
@pytest.mark.parametrize("prompt", [None, "what is said in <audio> here", "answer in one word"])
def test_streamed_answer_equals_offline(
    chunked: AuraModel, piece: int, prompt: str | None, one_thread
) -> None:
    wave = tone_clip(1.37, 5)
    offline = chunked.run_batch([chunked.request(wave, prompt, max_new_tokens=MAX_NEW)])[0]
    text, result = _streamed(chunked, wave, piece, prompt)
    assert text == offline.text and result.prompt_tokens == offline.prompt_tokens
    assert result.completion_tokens == offline.completion_tokens > 0


def test_streamed_long_audio_is_windowed_as_offline(chunked: AuraModel, one_thread) -> None:
    wave = np.concatenate([tone_clip(15.0, i) for i in range(2)] + [tone_clip(1.1, 9)])  # 31.1 s: two windows
    offline = chunked.run_batch([chunked.request(wave, max_new_tokens=MAX_NEW)])[0]
    text, result = _streamed(chunked, wave, 8000)
    assert text == offline.text and result.prompt_tokens == offline.prompt_tokens


def test_chunks_are_in_the_cache_before_the_end(chunked: AuraModel) -> None:
    """A chunk of 0.16 s (2 tokens) runs as soon as the 200 samples its last mel frame reads past it arrive."""
    session = chunked.open_stream(max_new_tokens=2)
    wave = tone_clip(1.0, 1)
    two_chunks = 2 * 2560 + 200
    assert session.feed(wave[:100]) == 0
    assert session.feed(wave[100 : two_chunks - 1]) == 2  # the first chunk only
    assert session.feed(wave[two_chunks - 1 : two_chunks]) == 4
    list(session.finish())
    assert session.result is not None and session.result.prompt_tokens == session.prompt_tokens


def test_full_span_checkpoint_is_refused_or_run_chunk_causal_on_purpose(tiny_run: Path) -> None:
    model = AuraModel.from_pretrained(tiny_run)
    with pytest.raises(StreamingError, match="audio_attention=bidirectional.*chunk-causal"):
        model.open_stream()
    chunked = AuraModel.from_pretrained(tiny_run, audio_attention="chunk-causal")
    wave = tone_clip(0.9, 2)
    offline = chunked.generate(wave, max_new_tokens=MAX_NEW)
    assert _streamed(chunked, wave, 4000)[0] == offline


def test_session_misuse_has_clear_errors(chunked: AuraModel) -> None:
    session = chunked.open_stream(max_new_tokens=2)
    with pytest.raises(RequestError, match="no audio was fed"):
        list(session.finish())
    session = chunked.open_stream(max_new_tokens=2)
    with pytest.raises(RequestError, match="NaN or infinite"):
        session.feed(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(RequestError, match="exactly one <audio>"):
        chunked.open_stream("compare <audio> with <audio>")
    session.feed(tone_clip(0.2, 1))
    list(session.finish())
    with pytest.raises(StreamingError, match="finished"):
        session.feed(tone_clip(0.2, 1))


@pytest.mark.real
def test_shipped_checkpoint_streams_its_offline_answer(tmp_path: Path, one_thread) -> None:
    """The shipped checkpoint run chunk-causal: the streamed answer is the offline one. Over 30 blocks the
    split forwards round differently from the single prefill (about 1e-6), so a later near-tie may pick
    another token: the answers must agree on their first words."""
    clips = read_manifest(synthesize("asr", 2, tmp_path, split="test", seed=5, progress=False))
    wave = np.concatenate([load_audio(clip.audio) for clip in clips])
    model = AuraModel.from_pretrained("aura-smollm2-135m", audio_attention="chunk-causal")
    offline = model.run_batch([model.request(wave, max_new_tokens=24)])[0]
    text, result = _streamed(model, wave, 1600)
    assert result.prompt_tokens == offline.prompt_tokens
    assert text.split()[:5] == offline.text.split()[:5] and len(offline.text.split()) >= 5
