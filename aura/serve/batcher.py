"""The batching queue: requests that arrive together become one model batch, run in one worker thread.

On a CPU a batch of 8 costs little more than one request, so concurrency turns into throughput instead of a
queue of waiting clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationRequest, GenerationResult, RequestError
from aura.serve.limits import (
    APIError,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
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
        self._queue: asyncio.Queue[Job] | None = None
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

    def submit(self, request: GenerationRequest, *, stream: bool) -> Job:
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited; the app must be run with its lifespan.")
        loop = asyncio.get_running_loop()
        job = Job(request, loop, asyncio.Queue() if stream else None, loop.create_future())
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

    async def _run_batch(self, jobs: list[Job]) -> None:
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
class Place:
    """A request's place in the admission queue; `job` takes it over once the request is submitted."""

    job: Job | None = None


def _finish(job: Job, result: GenerationResult | None = None, *, error: Exception | None = None) -> None:
    """Resolve the job once (a result, or the batch's error) and close its piece stream."""
    if job.done.done():
        return
    if error is not None:
        job.done.set_exception(error)
    else:
        job.done.set_result(result)
    if job.pieces is not None:
        job.pieces.put_nowait(None)


def client_field(field: str) -> str:
    """The request-body name of a `GenerationRequest` field (the server fills max_new_tokens from max_tokens)."""
    return "max_tokens" if field == "max_new_tokens" else field


def job_error(err: Exception) -> APIError:
    """How a failed job is answered: a request the model refused names its field (400); the rest are 500."""
    if isinstance(err, RequestError):
        return APIError(400, str(err), param=client_field(err.field))
    return APIError(500, f"Generation failed: {err}", type="server_error")


async def job_result(job: Job) -> GenerationResult:
    """The job's result; if the client goes away first, the row is stopped at the next token."""
    try:
        return await asyncio.shield(job.done)
    except asyncio.CancelledError:
        job.cancelled.set()
        raise
    except Exception as err:
        raise job_error(err) from err
