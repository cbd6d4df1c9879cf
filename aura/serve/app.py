"""OpenAI-compatible HTTP server over an `AuraModel`.

Requests that arrive together are grouped into one model batch by a small queue (`Batcher`): on a CPU a
batch of 8 costs little more than one request, so concurrency turns into throughput instead of a queue
of waiting clients. Every failure is answered in OpenAI's error shape and never takes the server down.
`/` serves the voice page (`aura/serve/web/`), a client of the same streaming chat endpoint.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aura.infer.aura_model import AuraModel
from aura.serve.batcher import Batcher
from aura.serve.limits import (
    DEFAULT_MAX_QUEUE,
    Admission,
    APIError,
    ErrorResponse,
    Limits,
    check_api_key,
)
from aura.serve.routes import Service
from aura.serve.stream import add_stream_route

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 25 * 2**20
WEB = Path(__file__).parent / "web"  # the voice page: plain HTML/JS/CSS shipped as package data


# ---------------------------------------------------------------- request schemas (OpenAI's, the parts we use)


# ---------------------------------------------------------------- batching queue


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
    admission = Admission(max_queue, max_batch)
    batcher = Batcher(
        model, max_batch=max_batch, wait_seconds=batch_wait_seconds, on_batch_time=admission.record_batch
    )
    service = Service(model, model_name, batcher, admission, limits or Limits(), default_max_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="AuRA", lifespan=lifespan)
    app.state.batcher, app.state.admission = batcher, admission
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    _document_400_not_422(app)
    _answer_errors_as_openai(app)
    authorized = [Depends(_key_check(api_key))]
    # the voice page is public like /health; its requests to /v1 carry the key the user enters
    app.mount("/web", StaticFiles(directory=WEB), name="web")
    app.get("/", include_in_schema=False)(_page)
    app.get("/health")(service.health)
    app.get("/v1/models", dependencies=authorized, responses={401: ERROR_REPLIES[401]})(service.models)
    app.post("/v1/chat/completions", dependencies=authorized, response_model=None, responses=ERROR_REPLIES)(
        service.chat
    )
    app.post(
        "/v1/audio/transcriptions", dependencies=authorized, response_model=None, responses=ERROR_REPLIES
    )(service.transcriptions)
    if isinstance(model, AuraModel):  # the torch backend streams; llama.cpp's answers whole requests
        add_stream_route(
            app,
            model,
            limits=service.limits,
            admission=admission,
            api_key=api_key,
            default_max_tokens=default_max_tokens,
        )
    return app


async def _page() -> FileResponse:
    return FileResponse(WEB / "index.html")


def _answer_errors_as_openai(app: FastAPI) -> None:
    """Every failure in OpenAI's error body: the server's own, FastAPI's validation and HTTP errors, and
    any crash (a 500 that never takes the server down)."""

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


def _key_check(api_key: str | None) -> Callable[[Request], None]:
    """The dependency that refuses a /v1 request without the server's key (none set: all pass)."""

    def check_key(request: Request) -> None:
        check_api_key(request.headers.get("authorization", ""), api_key)

    return check_key


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run `app` (from `create_app`) in the foreground until interrupted (what `aura serve` calls)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
