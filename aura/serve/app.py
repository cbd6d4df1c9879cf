"""OpenAI-compatible HTTP server over an `AuraModel`.

Requests that arrive together are grouped into one model batch by a small queue (`Batcher`): on a CPU a
batch of 8 costs little more than one request, so concurrency turns into throughput instead of a queue
of waiting clients. Every failure is answered in OpenAI's error shape and never takes the server down.
`/` serves the voice page (`aura/serve/web/`), a client of the same streaming chat endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aura.audio.features import SAMPLE_RATE, AudioError, AudioFormatError, has_sound, load_audio
from aura.infer.aura_model import (
    SEED_MAX,
    SEED_MIN,
    TRANSCRIBE_PROMPT,
    AuraModel,
    GenerationRequest,
    GenerationResult,
    RequestError,
)
from aura.model.student import AUDIO_PLACEHOLDER
from aura.serve.limits import (
    DEFAULT_MAX_QUEUE,
    Admission,
    APIError,
    AudioBudget,
    ErrorResponse,
    Limits,
    check_api_key,
)
from aura.serve.stream import add_stream_route

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 25 * 2**20
AUDIO_FORMATS = ("wav", "mp3", "flac")
WEB = Path(__file__).parent / "web"  # the voice page: plain HTML/JS/CSS shipped as package data


# ---------------------------------------------------------------- request schemas (OpenAI's, the parts we use)


class _Loose(BaseModel):
    """OpenAI clients send fields we do not use (`n`, `user`, `logprobs`…); ignore them rather than fail."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class InputAudio(_Loose):
    data: str
    format: str = "wav"


class ContentPart(_Loose):
    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatCompletionRequest(_Loose):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None


# ---------------------------------------------------------------- batching queue


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    pieces: asyncio.Queue[str | None] | None  # text pieces for a streaming client; None marks the end
    done: asyncio.Future[GenerationResult]
    cancelled: threading.Event = field(default_factory=threading.Event)
    streamed: bool = False  # text already went to the client: the job cannot be restarted


class Batcher:
    """Groups requests that arrive within `wait_seconds` of each other (up to `max_batch`) into one model call.

    The model runs in a single worker thread, one batch at a time, so the event loop stays free to accept
    and decode the next requests while a batch is generating. Streaming requests join batches like the
    others; their text pieces are handed back to the event loop as the model produces them.

    A batch that fails is run again request by request, so a request that breaks the model fails alone
    and its neighbours are answered as if it had never been there.
    """

    def __init__(
        self,
        model: AuraModel,
        *,
        max_batch: int = 8,
        wait_seconds: float = 0.01,
        on_batch_time: Callable[[float], None] | None = None,
    ) -> None:
        self.model, self.max_batch, self.wait_seconds = model, max_batch, wait_seconds
        self.on_batch_time = on_batch_time
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # observed batch sizes, for tests and logs

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="aura-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def submit(self, request: GenerationRequest, *, stream: bool) -> _Job:
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited; the app must be run with its lifespan.")
        loop = asyncio.get_running_loop()
        job = _Job(request, loop, asyncio.Queue() if stream else None, loop.create_future())
        self._queue.put_nowait(job)
        return job

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            deadline = time.monotonic() + self.wait_seconds
            while len(jobs) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            for job in jobs:
                if job.cancelled.is_set():  # its client left while it waited
                    job.done.cancel()
            jobs = [job for job in jobs if not job.done.done()]
            if jobs:
                self.batch_sizes.append(len(jobs))
                started = time.monotonic()
                await self._run_batch(jobs)
                if self.on_batch_time is not None:
                    self.on_batch_time(time.monotonic() - started)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        def on_text(index: int, piece: str) -> bool:
            job = jobs[index]
            if job.pieces is not None:
                job.streamed = True
                job.loop.call_soon_threadsafe(job.pieces.put_nowait, piece)
            return not job.cancelled.is_set()

        def on_done(index: int, result: GenerationResult) -> None:
            job = jobs[index]
            job.loop.call_soon_threadsafe(_finish, job, result)

        requests = [job.request for job in jobs]
        try:
            results = await asyncio.to_thread(self.model.run_batch, requests, on_text, on_done)
        except Exception as err:  # the server must survive a failing batch
            if len(jobs) == 1:
                if not isinstance(err, RequestError):
                    log.exception("generation failed")
                _finish(jobs[0], error=err)
                return
            log.warning("a batch of %d failed (%s); running its requests one by one", len(jobs), err)
            for job in jobs:
                if job.done.done():
                    continue
                if job.streamed:  # part of its answer is out: restarting would repeat it
                    _finish(job, error=err)
                else:
                    await self._run_batch([job])
            return
        for job, result in zip(jobs, results, strict=True):  # rows whose client hung up
            _finish(job, result)


@dataclass
class _Place:
    """A request's place in the admission queue; `job` takes it over once the request is submitted."""

    job: _Job | None = None


def _finish(job: _Job, result: GenerationResult | None = None, *, error: Exception | None = None) -> None:
    """Resolve the job once (a result, or the batch's error) and close its piece stream."""
    if job.done.done():
        return
    if error is not None:
        job.done.set_exception(error)
    else:
        job.done.set_result(result)
    if job.pieces is not None:
        job.pieces.put_nowait(None)


# ---------------------------------------------------------------- body size limit


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413 before anything parses them.

    The declared Content-Length is checked first; chunked bodies are counted while they are read, so a
    client cannot get around the limit by not declaring a length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = APIError(
            413,
            f"The request body is larger than the server's limit of {self.max_bytes} bytes. "
            "Send shorter audio or ask the operator to raise --max-body-mb.",
            code="request_too_large",
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large.response()(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await too_large.response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, replayed, send)


# ---------------------------------------------------------------- request → GenerationRequest


def decode_audio_part(part: InputAudio, where: str, budget: AudioBudget) -> np.ndarray:
    """Base64 audio of an `input_audio` part → 16-kHz wave, or a 400 naming the part and the problem.

    The declared format must match the data, and the wave counts against the request's audio budget.
    """
    if part.format not in AUDIO_FORMATS:
        raise APIError(
            400,
            f"{where}.format is {part.format!r}; supported formats are {', '.join(AUDIO_FORMATS)}.",
            param=f"{where}.format",
        )
    try:
        raw = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise APIError(
            400, f"{where}.data is not valid base64 ({err}).", param=f"{where}.data", code="invalid_base64"
        ) from err
    try:
        wave = load_audio(raw, name=f"{where} ({part.format})", expected_format=part.format)
    except AudioFormatError as err:
        raise APIError(400, str(err), param=f"{where}.format", code="invalid_audio_format") from err
    except AudioError as err:
        raise APIError(400, str(err), param=f"{where}.data", code="invalid_audio") from err
    budget.add(len(wave) / SAMPLE_RATE, where)
    return wave


def chat_to_request(
    body: ChatCompletionRequest, limits: Limits, default_max_tokens: int
) -> GenerationRequest:
    """OpenAI messages → text turns with `<audio>` placeholders where audio parts were, plus the waves.

    The request's audio parts are counted before any is decoded, and its seconds as they are decoded,
    so audio over the limits is refused however it is split.
    """
    budget = AudioBudget(limits)
    budget.check_parts(
        sum(
            part.type == "input_audio"
            for message in body.messages
            if isinstance(message.content, list)
            for part in message.content
        )
    )
    messages: list[dict[str, str]] = []
    audio: list[np.ndarray] = []
    for i, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        if message.content is None and message.role != "assistant":
            raise APIError(
                400,
                f"messages[{i}].content is null; a {message.role} message needs text or content parts.",
                param=f"messages[{i}].content",
            )
        if message.content is None or isinstance(message.content, str):
            text = message.content or ""
            if AUDIO_PLACEHOLDER in text:
                raise APIError(
                    400,
                    f"messages[{i}].content contains the reserved text {AUDIO_PLACEHOLDER!r}; "
                    "send audio as an input_audio content part.",
                    param=f"messages[{i}].content",
                )
            messages.append({"role": role, "content": text})
            continue
        pieces: list[str] = []
        for j, part in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if part.type == "text":
                if part.text is None or AUDIO_PLACEHOLDER in part.text:
                    raise APIError(
                        400,
                        f"{where}.text is missing or contains {AUDIO_PLACEHOLDER!r}.",
                        param=f"{where}.text",
                    )
                pieces.append(part.text)
            elif part.type == "input_audio":
                if part.input_audio is None:
                    raise APIError(400, f"{where}.input_audio is missing.", param=f"{where}.input_audio")
                audio.append(decode_audio_part(part.input_audio, f"{where}.input_audio", budget))
                pieces.append(AUDIO_PLACEHOLDER)
            else:
                raise APIError(
                    400,
                    f"{where}.type is {part.type!r}; this server reads 'text' and 'input_audio' parts.",
                    param=f"{where}.type",
                )
        messages.append({"role": role, "content": "\n".join(pieces)})
    return GenerationRequest(
        messages=messages,
        audio=audio,
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )


# ---------------------------------------------------------------- app

# the error replies every /v1 route can give, documented in the OpenAPI schema with OpenAI's error body
ERROR_REPLIES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message and `param` say what)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "Body, audio or tokens over the server's limits"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the `Retry-After` seconds"},
}


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents its own 422 validation reply; this server answers invalid requests with 400."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    model: AuraModel,
    *,
    model_name: str = "aura",
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    limits: Limits | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_batch: int = 8,
    batch_wait_seconds: float = 0.01,
    default_max_tokens: int = 256,
) -> FastAPI:
    """The FastAPI app serving `model` (anything with AuraModel's `check` and `run_batch`).

    `limits` bound each request; at most `max_queue` requests wait or run at once (more get a 429).
    """
    limits = limits or Limits()
    admission = Admission(max_queue, max_batch)
    batcher = Batcher(
        model, max_batch=max_batch, wait_seconds=batch_wait_seconds, on_batch_time=admission.record_batch
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="AuRA", lifespan=lifespan)
    app.state.batcher, app.state.admission = batcher, admission
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    _document_400_not_422(app)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        fields = [".".join(str(p) for p in e["loc"][1:]) for e in errors]
        problems = "; ".join(f"{name or 'body'}: {e['msg']}" for name, e in zip(fields, errors, strict=True))
        return APIError(400, f"Invalid request: {problems}", param=fields[0] if fields else None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return APIError(err.status_code, str(err.detail), type=kind, headers=err.headers).response()

    @app.exception_handler(Exception)
    async def _crash(_: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(500, f"Internal error: {err}", type="server_error").response()

    def check_key(request: Request) -> None:
        check_api_key(request.headers.get("authorization", ""), api_key)

    authorized = [Depends(check_key)]

    # the voice page is public like /health; its requests to /v1 carry the key the user enters
    app.mount("/web", StaticFiles(directory=WEB), name="web")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "batches": len(batcher.batch_sizes),
            "pending": admission.pending,
            "refused": admission.refused,
        }

    @app.get("/v1/models", dependencies=authorized, responses={401: ERROR_REPLIES[401]})
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "aura"}
        return {"object": "list", "data": [card]}

    async def admit(request: GenerationRequest) -> None:
        """Refuse a request that cannot run (a value out of range, context overflow, over the token limit)
        before it joins, and fails, a batch."""
        try:
            prompt_tokens = await run_in_threadpool(model.check, request)
        except RequestError as err:
            raise APIError(400, str(err), param=_client_field(err.field)) from err
        except ValueError as err:
            raise APIError(400, str(err), code="context_length_exceeded") from err
        AudioBudget(limits).check_tokens(prompt_tokens, request.max_new_tokens)

    @contextlib.contextmanager
    def queue_place() -> Iterator[_Place]:
        """A place in the bounded queue (429 when full), held while the request is read and checked and
        then by its job until the result is complete; a request refused on the way gives it back at once."""
        admission.enter()
        place = _Place()
        try:
            yield place
        finally:
            if place.job is None:
                admission.leave()
            else:
                place.job.done.add_done_callback(lambda _: admission.leave())

    @app.post("/v1/chat/completions", dependencies=authorized, response_model=None, responses=ERROR_REPLIES)
    async def chat(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        with queue_place() as place:
            request = await run_in_threadpool(chat_to_request, body, limits, default_max_tokens)
            await admit(request)
            job = place.job = batcher.submit(request, stream=body.stream)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _chat_events(job, completion_id, created, model_name, include_usage),
                media_type="text/event-stream",
            )
        result = await _wait(job)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": _usage(result),
            }
        )

    @app.post(
        "/v1/audio/transcriptions", dependencies=authorized, response_model=None, responses=ERROR_REPLIES
    )
    async def transcriptions(
        file: Annotated[UploadFile, File()],
        # `model` and `language` are part of OpenAI's form; one model answers, in the language it learned
        model_field: Annotated[str, Form(alias="model")],
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=2.0, allow_inf_nan=False)] = 0.0,
        language: Annotated[str | None, Form()] = None,
    ) -> JSONResponse | PlainTextResponse:
        if response_format not in ("json", "text"):
            raise APIError(
                400,
                f"response_format {response_format!r} is not supported; use 'json' or 'text'.",
                param="response_format",
            )
        with queue_place() as place:
            raw = await file.read()
            label = f"file {file.filename or '(unnamed)'}"
            try:
                wave = await run_in_threadpool(load_audio, raw, name=label)
            except AudioError as err:
                raise APIError(400, str(err), param="file", code="invalid_audio") from err
            AudioBudget(limits).add(len(wave) / SAMPLE_RATE, "file")
            if not has_sound(wave):  # a model asked to transcribe silence invents words
                return _transcription("", response_format, GenerationResult("", 0, 0, "stop"))
            # OpenAI's `prompt` is a vocabulary/style hint: give it as context before the trained ASR prompt
            instruction = TRANSCRIBE_PROMPT if not prompt else f"Context: {prompt}\n\n{TRANSCRIBE_PROMPT}"
            request = GenerationRequest(
                messages=[{"role": "user", "content": instruction}],
                audio=[wave],
                max_new_tokens=default_max_tokens,
                temperature=temperature,
            )
            await admit(request)
            job = place.job = batcher.submit(request, stream=False)
        result = await _wait(job)
        return _transcription(result.text.strip(), response_format, result)

    add_stream_route(
        app, model, limits=limits, admission=admission, api_key=api_key, default_max_tokens=default_max_tokens
    )
    return app


def _transcription(
    text: str, response_format: str, result: GenerationResult
) -> JSONResponse | PlainTextResponse:
    if response_format == "text":
        return PlainTextResponse(text)
    return JSONResponse({"text": text, "usage": {"type": "tokens", **_usage(result)}})


def _client_field(field: str) -> str:
    """The request-body name of a `GenerationRequest` field (the server fills max_new_tokens from max_tokens)."""
    return "max_tokens" if field == "max_new_tokens" else field


def _job_error(err: Exception) -> APIError:
    """How a failed job is answered: a request the model refused names its field (400); the rest are 500."""
    if isinstance(err, RequestError):
        return APIError(400, str(err), param=_client_field(err.field))
    return APIError(500, f"Generation failed: {err}", type="server_error")


async def _wait(job: _Job) -> GenerationResult:
    """The job's result; if the client goes away first, the row is stopped at the next token."""
    try:
        return await asyncio.shield(job.done)
    except asyncio.CancelledError:
        job.cancelled.set()
        raise
    except Exception as err:
        raise _job_error(err) from err


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


async def _chat_events(
    job: _Job, completion_id: str, created: int, model_name: str, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`."""
    assert job.pieces is not None

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    def delta(content: dict[str, str], finish: str | None = None) -> str:
        return event([{"index": 0, "delta": content, "finish_reason": finish}])

    try:
        yield delta({"role": "assistant", "content": ""})
        while (piece := await job.pieces.get()) is not None:
            yield delta({"content": piece})
        try:
            result = await job.done
        except Exception as err:  # headers are sent already: report the failure inside the stream
            yield f"data: {json.dumps(_job_error(err).body())}\n\n"
            return
        yield delta({}, result.finish_reason)
        if include_usage:
            yield event([], usage=_usage(result))
        yield "data: [DONE]\n\n"
    finally:
        if not job.done.done():
            job.cancelled.set()


def serve(
    model: AuraModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "aura",
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    limits: Limits | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_batch: int = 8,
) -> None:
    """Run the server in the foreground until interrupted (what `aura serve` calls)."""
    import uvicorn

    app = create_app(
        model,
        model_name=model_name,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        limits=limits,
        max_queue=max_queue,
        max_batch=max_batch,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
