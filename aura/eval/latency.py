"""Latency as a user feels it: time to first text, total time, real-time factor, throughput at batch 1 and
8, timed in the caller's thread from the moment the clip is in memory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aura.eval.items import EvalItem
from aura.eval.systems import System

THROUGHPUT_BATCH = 8


# ------------------------------------------------------------------------------------------ running
@dataclass
class Record:
    """One system's answer to one example, with its timings (seconds) or the error it raised."""

    id: str
    task: str
    prediction: str = ""
    ttft_s: float | None = None
    total_s: float | None = None
    duration_s: float = 0.0
    error: str | None = None


def timed_stream(system: System, item: EvalItem) -> Record:
    """Run `system.stream` on one example, timing the first piece of text and the end."""
    record = Record(id=item.id, task=item.task, duration_s=item.duration)
    pieces: list[str] = []
    start = time.perf_counter()
    try:
        for piece in system.stream(item):
            if record.ttft_s is None:
                record.ttft_s = time.perf_counter() - start
            pieces.append(piece)
    except Exception as err:  # one failing example must not end the evaluation
        record.error = f"{type(err).__name__}: {err}"
        return record
    record.total_s = time.perf_counter() - start
    if record.ttft_s is None:  # the end-of-turn token came first: the first token is the last
        record.ttft_s = record.total_s
    record.prediction = "".join(pieces).strip()
    return record


def throughput(system: System, items: Sequence[EvalItem], batch_size: int) -> dict[str, float] | None:
    """Examples and audio seconds answered per second with `answer` on batches of `batch_size`."""
    done, audio, elapsed = 0, 0.0, 0.0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        began = time.perf_counter()
        try:
            system.answer(chunk)
        except Exception:  # failures are recorded by the per-example pass; skip the batch here
            continue
        elapsed += time.perf_counter() - began
        done += len(chunk)
        audio += sum(item.duration for item in chunk)
    if done == 0 or elapsed <= 0:
        return None
    return {"examples_per_s": done / elapsed, "audio_s_per_s": audio / elapsed, "examples": done}


def _spread(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median with the 10th/90th percentiles: the spread of per-example timings."""
    arr = np.asarray(values, dtype=np.float64) * scale
    return {
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
    }


def latency_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Median TTFT, total time and RTF (total / clip length) over the examples that succeeded."""
    ok = [r for r in records if r.error is None and r.total_s is not None]
    if not ok:
        return {}
    summary: dict[str, Any] = {}
    for key, values, scale in (
        ("ttft_ms", [r.ttft_s for r in ok], 1000.0),
        ("total_ms", [r.total_s for r in ok], 1000.0),
        ("rtf", [r.total_s / r.duration_s for r in ok], 1.0),
    ):
        stats = _spread(values, scale)
        summary[f"{key}_median" if key != "rtf" else "rtf"] = stats["median"]
        summary[f"{key}_p10"], summary[f"{key}_p90"] = stats["p10"], stats["p90"]
    return summary
