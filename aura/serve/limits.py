"""What the server refuses, and how: OpenAI-shaped errors, per-request limits and admission control.

One model worker serves every client, so a single request must not be able to hold it for long: the
limits bound a request's *total* audio (seconds and parts, however it is split) and its tokens, and a
bounded number of requests may wait at once; the next one is told to come back (429 + `Retry-After`)
instead of joining an ever longer queue. Everything here runs before any model work.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

DEFAULT_MAX_AUDIO_SECONDS = 300.0
DEFAULT_MAX_AUDIO_PARTS = 16
DEFAULT_MAX_REQUEST_TOKENS = 8192
DEFAULT_MAX_QUEUE = 64


class APIError(Exception):
    """An error answered to the client in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error reply (documented in the OpenAPI schema)."""

    error: ErrorDetail


@dataclass(frozen=True)
class Limits:
    """Per-request ceilings (the `aura serve` options of the same names)."""

    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS  # all audio parts of one request together
    max_audio_parts: int = DEFAULT_MAX_AUDIO_PARTS
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS  # prompt (text + audio) + tokens asked for


class AudioBudget:
    """Counts one request's audio while its parts are decoded, refusing it at the part that goes over."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.seconds = 0.0

    def check_parts(self, parts: int) -> None:
        """Refuse too many parts before any of them is decoded."""
        if parts > self.limits.max_audio_parts:
            raise APIError(
                413,
                f"The request has {parts} audio parts, over the server's limit of "
                f"{self.limits.max_audio_parts} per request (--max-audio-parts). Send fewer clips per request.",
                param="messages",
                code="too_many_audio_parts",
            )

    def remaining(self) -> float:
        return max(0.0, self.limits.max_audio_seconds - self.seconds)

    def add(self, seconds: float, where: str) -> None:
        self.seconds += seconds
        if self.seconds > self.limits.max_audio_seconds:
            raise APIError(
                413,
                f"{where}: the request's audio totals {self.seconds:.1f} s up to this part, over the limit of "
                f"{self.limits.max_audio_seconds:g} s per request (--max-audio-seconds). Send less audio per "
                "request.",
                param=where,
                code="audio_too_long",
            )

    def check_tokens(self, prompt_tokens: int, max_new_tokens: int) -> None:
        total = prompt_tokens + max_new_tokens
        if total > self.limits.max_request_tokens:
            raise APIError(
                413,
                f"The request needs {total} tokens ({prompt_tokens} of prompt, {max_new_tokens} to generate), "
                f"over the server's limit of {self.limits.max_request_tokens} per request "
                "(--max-request-tokens). Send less audio or text, or ask for fewer tokens.",
                param="max_tokens",
                code="request_too_large",
            )


class Admission:
    """A bounded count of requests in the server (waiting or being generated).

    A request is admitted on arrival and leaves when its result is complete; a full house is answered
    429 with `Retry-After`, estimated from how long recent batches took and how many are ahead.
    """

    def __init__(self, max_pending: int, max_batch: int) -> None:
        if max_pending < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_pending}.")
        self.max_pending, self.max_batch = max_pending, max_batch
        self.pending = 0
        self.refused = 0
        self._batch_seconds: deque[float] = deque(maxlen=16)

    def record_batch(self, seconds: float) -> None:
        self._batch_seconds.append(seconds)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained enough for one more request (1 to 60)."""
        per_batch = sum(self._batch_seconds) / len(self._batch_seconds) if self._batch_seconds else 1.0
        return max(1, min(60, math.ceil(per_batch * math.ceil(self.pending / self.max_batch))))

    def enter(self) -> None:
        if self.pending >= self.max_pending:
            self.refused += 1
            wait = self.retry_after()
            raise APIError(
                429,
                f"The server is busy: {self.pending} requests are already waiting or running (the limit is "
                f"{self.max_pending}, --max-queue). Retry after {wait} s.",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(wait)},
            )
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1


def check_api_key(header: str, api_key: str | None) -> None:
    """A 401 unless the `Authorization` header carries `Bearer API_KEY` (anything goes without a key)."""
    if api_key is None:
        return
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        message = (
            "Missing API key: send 'Authorization: Bearer KEY'."
            if not header
            else "Incorrect API key provided."
        )
        raise APIError(401, message, code="invalid_api_key")
