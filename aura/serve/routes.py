"""The HTTP routes: health, models, chat completions (whole or streamed) and transcriptions.

Each request takes a place in the bounded queue (a 429 when full) while it is read and checked, is refused
before it joins a batch when it cannot run, and then waits for its row of a batch.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from aura.audio.features import SAMPLE_RATE, AudioError, has_sound, load_audio
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationRequest, GenerationResult, RequestError
from aura.model.prompt import TRANSCRIBE_PROMPT
from aura.serve.batcher import Batcher, Job, Place, client_field, job_error, job_result
from aura.serve.limits import Admission, APIError, AudioBudget, Limits
from aura.serve.requests import ChatCompletionRequest, chat_to_request


@dataclass
class Service:
    """What the routes answer with: the model, its batching queue and admission, the request limits."""

    model: AuraModel
    model_name: str
    batcher: Batcher
    admission: Admission
    limits: Limits
    default_max_tokens: int

    async def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_name,
            "batches": len(self.batcher.batch_sizes),
            "pending": self.admission.pending,
            "refused": self.admission.refused,
        }

    async def models(self) -> dict[str, Any]:
        card = {"id": self.model_name, "object": "model", "created": int(time.time()), "owned_by": "aura"}
        return {"object": "list", "data": [card]}

    async def admit(self, request: GenerationRequest) -> None:
        """Refuse a request that cannot run (a value out of range, context overflow, over the token limit)
        before it joins, and fails, a batch."""
        try:
            prompt_tokens = await run_in_threadpool(self.model.check, request)
        except RequestError as err:
            raise APIError(400, str(err), param=client_field(err.field)) from err
        except ValueError as err:
            raise APIError(400, str(err), code="context_length_exceeded") from err
        AudioBudget(self.limits).check_tokens(prompt_tokens, request.max_new_tokens)

    @contextlib.contextmanager
    def queue_place(self) -> Iterator[Place]:
        """A place in the bounded queue (429 when full), held while the request is read and checked and
        then by its job until the result is complete; a request refused on the way gives it back at once."""
        self.admission.enter()
        place = Place()
        try:
            yield place
        finally:
            if place.job is None:
                self.admission.leave()
            else:
                place.job.done.add_done_callback(lambda _: self.admission.leave())

    async def chat(self, body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        with self.queue_place() as place:
            request = await run_in_threadpool(chat_to_request, body, self.limits, self.default_max_tokens)
            await self.admit(request)
            job = place.job = self.batcher.submit(request, stream=body.stream)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                chat_events(job, completion_id, created, self.model_name, include_usage),
                media_type="text/event-stream",
            )
        result = await job_result(job)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": usage(result),
            }
        )

    async def transcriptions(
        self,
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
        with self.queue_place() as place:
            raw = await file.read()
            label = f"file {file.filename or '(unnamed)'}"
            try:
                wave = await run_in_threadpool(load_audio, raw, name=label)
            except AudioError as err:
                raise APIError(400, str(err), param="file", code="invalid_audio") from err
            AudioBudget(self.limits).add(len(wave) / SAMPLE_RATE, "file")
            if not has_sound(wave):  # a model asked to transcribe silence invents words
                return transcription("", response_format, GenerationResult("", 0, 0, "stop"))
            # OpenAI's `prompt` is a vocabulary/style hint: give it as context before the trained ASR prompt
            instruction = TRANSCRIBE_PROMPT if not prompt else f"Context: {prompt}\n\n{TRANSCRIBE_PROMPT}"
            request = GenerationRequest(
                messages=[{"role": "user", "content": instruction}],
                audio=[wave],
                max_new_tokens=self.default_max_tokens,
                temperature=temperature,
            )
            await self.admit(request)
            job = place.job = self.batcher.submit(request, stream=False)
        result = await job_result(job)
        return transcription(result.text.strip(), response_format, result)


def transcription(
    text: str, response_format: str, result: GenerationResult
) -> JSONResponse | PlainTextResponse:
    if response_format == "text":
        return PlainTextResponse(text)
    return JSONResponse({"text": text, "usage": {"type": "tokens", **usage(result)}})


def usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


async def chat_events(
    job: Job, completion_id: str, created: int, model_name: str, include_usage: bool
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
            yield f"data: {json.dumps(job_error(err).body())}\n\n"
            return
        yield delta({}, result.finish_reason)
        if include_usage:
            yield event([], usage=usage(result))
        yield "data: [DONE]\n\n"
    finally:
        if not job.done.done():
            job.cancelled.set()
