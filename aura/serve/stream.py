"""`WS /v1/audio/stream`: speech sent while it is spoken, the answer streamed back when it ends.

The protocol, one WebSocket per request:

1. the client sends a JSON text message `{"prompt": ..., "system": ..., "max_tokens": ..., "temperature":
   ..., "top_p": ..., "seed": ..., "format": "pcm_s16le" | "pcm_f32le"}` (every field optional; no prompt
   means transcribe; a prompt without `<audio>` gets the audio before its text); the server answers
   `{"type": "ready", "chunk_seconds": C}`;
2. binary messages of raw 16-kHz mono PCM in that format, of any size, as the audio is captured: each
   complete chunk of C seconds goes through the model while the next is spoken;
3. `{"type": "end"}` when the speech ends; the server sends `{"type": "delta", "text": ...}` per text
   piece, then `{"type": "done", "text": ..., "finish_reason": ..., "usage": {...}}`, and closes.

Any error is one `{"type": "error", "error": {message, type, param, code}}` message (OpenAI's error
body, as the HTTP routes answer) followed by a close. A server with `--api-key` wants the same
`Authorization: Bearer KEY` header on the WebSocket handshake. A model not trained chunk-causal is
refused at the first message (`aura.infer.streaming`). Each open stream holds a place in the request
queue, and its audio counts against `--max-audio-seconds`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aura.audio.features import SAMPLE_RATE
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import SEED_MAX, SEED_MIN, RequestError
from aura.infer.streaming import StreamingError, StreamingSession
from aura.serve.limits import Admission, APIError, AudioBudget, Limits, check_api_key

log = logging.getLogger(__name__)

SAMPLE_FORMATS = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}
POLICY_VIOLATION, INTERNAL_ERROR = 1008, 1011  # WebSocket close codes


class StreamStart(BaseModel):
    """The first message of a stream (fields it does not know are ignored, as the HTTP routes do)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str | None = None
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    format: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le"


def add_stream_route(
    app: FastAPI,
    model: AuraModel,
    *,
    limits: Limits,
    admission: Admission,
    api_key: str | None,
    default_max_tokens: int,
) -> None:
    """Serve `WS /v1/audio/stream` on `app` (see the module docstring)."""

    @app.websocket("/v1/audio/stream")
    async def audio_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            check_api_key(websocket.headers.get("authorization", ""), api_key)
            admission.enter()
        except APIError as err:
            await _refuse(websocket, err)
            return
        try:
            await _run_stream(websocket, model, limits, default_max_tokens)
        except WebSocketDisconnect:  # the client went away: nothing to answer
            pass
        except APIError as err:
            await _refuse(websocket, err)
        except Exception as err:  # the server must survive a failing stream
            log.exception("audio stream failed")
            await _refuse(websocket, APIError(500, f"Internal error: {err}", type="server_error"))
        finally:
            admission.leave()


async def _run_stream(
    websocket: WebSocket, model: AuraModel, limits: Limits, default_max_tokens: int
) -> None:
    start = _parse_start(await websocket.receive_text())
    max_new_tokens = start.max_tokens or default_max_tokens
    try:
        session = await asyncio.to_thread(
            model.open_stream,
            start.prompt,
            system=start.system,
            max_new_tokens=max_new_tokens,
            temperature=start.temperature,
            top_p=start.top_p,
            seed=start.seed,
        )
    except StreamingError as err:
        raise APIError(400, str(err), code="streaming_unsupported") from err
    except RequestError as err:
        raise APIError(400, str(err), param=err.field) from err
    sample_type = SAMPLE_FORMATS[start.format]
    await websocket.send_json({"type": "ready", "chunk_seconds": model.student.config.audio_chunk_seconds})
    budget = AudioBudget(limits)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            samples = _samples(message["bytes"], sample_type, start.format)
            budget.add(len(samples) / SAMPLE_RATE, "audio")
            await asyncio.to_thread(_feed, session, samples)
            budget.check_tokens(session.prompt_tokens, max_new_tokens)
            continue
        if _is_end(message.get("text")):
            break
    await _send_answer(websocket, session)


async def _send_answer(websocket: WebSocket, session: StreamingSession) -> None:
    """The answer as `delta` messages while it is decoded, then `done` with the usage, then close."""
    # the answer is decoded in one worker thread (the model's lock is held by the thread that took it) and
    # its pieces handed to the event loop as they come
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def decode() -> None:
        try:
            for piece in session.finish():
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
        finally:
            loop.call_soon_threadsafe(pieces.put_nowait, None)

    decoding = asyncio.ensure_future(asyncio.to_thread(decode))
    while (piece := await pieces.get()) is not None:
        await websocket.send_json({"type": "delta", "text": piece})
    await decoding  # its error, if any, is the stream's
    result = session.result
    assert result is not None
    await websocket.send_json(
        {
            "type": "done",
            "text": result.text,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }
    )
    await websocket.close()


def _feed(session: StreamingSession, samples: np.ndarray) -> None:
    try:
        session.feed(samples)
    except RequestError as err:
        raise APIError(400, str(err), param=err.field) from err


def _parse_start(text: str) -> StreamStart:
    try:
        return StreamStart.model_validate(json.loads(text))
    except json.JSONDecodeError as err:
        raise APIError(
            400, f"The first message must be a JSON object (the stream's settings): {err}."
        ) from err
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in err.errors())
        raise APIError(
            400, f"Invalid stream settings: {problems}", param=str(err.errors()[0]["loc"][0])
        ) from err


def _samples(data: bytes, sample_type: np.dtype, name: str) -> np.ndarray:
    if len(data) % sample_type.itemsize:
        raise APIError(
            400,
            f"An audio message of {len(data)} bytes is not a whole number of {name} samples "
            f"({sample_type.itemsize} bytes each); send whole samples.",
            param="format",
        )
    samples = np.frombuffer(data, dtype=sample_type)
    if sample_type.kind == "i":
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def _is_end(text: str | None) -> bool:
    try:
        message: Any = json.loads(text or "")
    except json.JSONDecodeError:
        message = None
    if isinstance(message, dict) and message.get("type") == "end":
        return True
    raise APIError(
        400,
        f'Expected binary audio or {{"type": "end"}} after the settings, got the text {str(text)[:80]!r}.',
    )


async def _refuse(websocket: WebSocket, err: APIError) -> None:
    """The error body, then a close: policy violation for the client's mistakes, internal error for ours."""
    try:
        await websocket.send_json({"type": "error", **err.body()})
        await websocket.close(code=INTERNAL_ERROR if err.status >= 500 else POLICY_VIOLATION)
    except (WebSocketDisconnect, RuntimeError):  # the client is already gone
        pass
