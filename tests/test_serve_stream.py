from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import aura_serve, tone_clip
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from aura.infer.aura_model import AuraModel

KEY = "stream-key"
MAX_NEW = 8


def _talk(url: str, settings: dict, audio: list[bytes], key: str | None = KEY) -> list[dict]:
    """One stream over a real WebSocket: settings, audio messages, end; every message the server sent."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    received = []
    with connect(url, additional_headers=headers) as ws:
        # a refused key is answered, and the socket closed, before the settings may have left
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps(settings))
        received.append(json.loads(ws.recv()))
        if received[0]["type"] == "error":
            return received
        # a refused stream is closed by the server at once: what it sent before still arrives
        with contextlib.suppress(ConnectionClosed):
            for data in audio:
                ws.send(data)
            ws.send(json.dumps({"type": "end"}))
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                received.append(json.loads(message))
    return received


@pytest.fixture(scope="module")
def stream_url(chunked_run: Path):
    with aura_serve("--model", str(chunked_run), "--api-key", KEY) as url:
        yield url.replace("http://", "ws://") + "/v1/audio/stream"


def test_streamed_speech_gets_the_offline_answer(stream_url: str, chunked_run: Path) -> None:
    wave = tone_clip(1.3, 4)
    offline = AuraModel.from_pretrained(chunked_run).generate(wave, "what is this", max_new_tokens=MAX_NEW)
    pieces = [wave[i : i + 1600].astype("<f4").tobytes() for i in range(0, len(wave), 1600)]
    received = _talk(
        stream_url, {"prompt": "what is this", "max_tokens": MAX_NEW, "format": "pcm_f32le"}, pieces
    )
    assert received[0] == {"type": "ready", "chunk_seconds": 0.16}
    deltas = [m["text"] for m in received if m["type"] == "delta"]
    done = received[-1]
    assert done["type"] == "done" and done["text"] == "".join(deltas) == offline
    assert done["usage"]["completion_tokens"] <= MAX_NEW
    # 16-bit PCM, the default format, is the same audio to within its quantisation
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    assert _talk(stream_url, {"max_tokens": 2}, [pcm])[-1]["type"] == "done"


def test_stream_errors_are_one_clear_message(stream_url: str) -> None:
    refused = _talk(stream_url, {}, [], key="wrong")
    assert refused[0]["type"] == "error" and refused[0]["error"]["code"] == "invalid_api_key"
    bad = _talk(stream_url, {"max_tokens": 0}, [])
    assert bad[0]["type"] == "error" and "max_tokens" in bad[0]["error"]["message"]
    odd = _talk(stream_url, {"format": "pcm_s16le"}, [b"\x00\x01\x02"])
    assert odd[-1]["type"] == "error" and "whole number of pcm_s16le samples" in odd[-1]["error"]["message"]
