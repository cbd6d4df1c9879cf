"""Time to first token after the end of speech, streamed against offline, for a 2-s and a 30-s utterance.

One chunk-causal model answers the same transcription request two ways, interleaved round by round so
machine load hits all alike:

- `streamed`: `AuraModel.open_stream`, fed microphone-sized pieces (0.1 s) of the utterance; every chunk
  completed goes through the LLM during the feed, and the clock starts at `finish()` (the end of speech);
- `offline`: `AuraModel.stream` on the whole clip, the clock starting when the clip is in memory.

It also records the feed's own cost (the LLM work done while the speech is spoken, per second of audio:
below 1 keeps up with a live speaker) and whether the streamed and offline answers are identical (they
must be: greedy decoding of the same model). Without a checkpoint trained chunk-causal it runs the
shipped one with the chunk-causal mask at inference (`audio_attention="chunk-causal"`): time depends on
sizes, not on what the weights learned, and the result records which it was.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from aura.infer.aura_model import AuraModel
from aura.infer.decoding import DTYPES
from aura.registry import DEFAULT_CHECKPOINT
from benchmarks.checkpoints import clips
from benchmarks.common import summarize, write_result

UTTERANCES = (2.0, 30.0)
PIECE_SECONDS = 0.1
MAX_NEW_TOKENS = 16
# the target: with streaming input, a 30-s utterance is answered as soon as a 2-s one is without it
TARGET = "streamed TTFT after 30 s <= offline TTFT of a 2-s utterance"


def _streamed(model: AuraModel, wave: np.ndarray) -> tuple[float, float, str]:
    """(TTFT ms after the end of speech, feed ms, answer)."""
    piece = int(PIECE_SECONDS * 16_000)
    session = model.open_stream(max_new_tokens=MAX_NEW_TOKENS)
    start = time.perf_counter()
    for begin in range(0, len(wave), piece):
        session.feed(wave[begin : begin + piece])
    fed = time.perf_counter()
    pieces = session.finish()
    first = next(pieces)
    ttft = time.perf_counter() - fed
    answer = first + "".join(pieces)
    return ttft * 1000, (fed - start) * 1000, answer


def _offline(model: AuraModel, wave: np.ndarray) -> tuple[float, str]:
    start = time.perf_counter()
    pieces = model.stream(wave, max_new_tokens=MAX_NEW_TOKENS)
    first = next(pieces)
    ttft = time.perf_counter() - start
    return ttft * 1000, first + "".join(pieces)


def run(repeats: int = 10, model: str | None = None, dtype: str = "float32") -> dict:
    name = model or DEFAULT_CHECKPOINT
    aura = AuraModel.from_pretrained(name, merge=True, dtype=DTYPES[dtype])
    trained = aura.student.config.audio_attention == "chunk-causal"
    if not trained:
        aura = AuraModel.from_pretrained(
            name, merge=True, dtype=DTYPES[dtype], audio_attention="chunk-causal"
        )
    waves = {seconds: clips(seconds) for seconds in UTTERANCES}
    ttft: dict[str, list[float]] = {}
    feed: dict[str, list[float]] = {}
    answers: dict[str, dict[str, str]] = {}
    for seconds, wave in waves.items():  # warm-up, and the answers compared
        answers[f"{seconds:g}s"] = {"streamed": _streamed(aura, wave)[2], "offline": _offline(aura, wave)[1]}
    for _ in range(repeats):
        for seconds, wave in waves.items():
            key = f"{seconds:g}s"
            streamed_ms, feed_ms, _ = _streamed(aura, wave)
            offline_ms, _ = _offline(aura, wave)
            ttft.setdefault(f"streamed {key}", []).append(streamed_ms)
            ttft.setdefault(f"offline {key}", []).append(offline_ms)
            feed.setdefault(key, []).append(feed_ms)
        # written after every round: on a loaded machine the rounds so far are still a result
        result = _result(name, trained, aura, repeats, ttft, feed, answers)
    print(f"feed ms per audio second: {result['feed_ms_per_audio_second']}; {result['targets']}")
    return result


def _result(
    name: str,
    trained: bool,
    aura: AuraModel,
    repeats: int,
    ttft: dict[str, list[float]],
    feed: dict[str, list[float]],
    answers: dict[str, dict[str, str]],
) -> dict:
    result: dict = {
        "checkpoint": str(name),
        "dtype": str(aura.student.llm.dtype).removeprefix("torch."),
        "attention": "chunk-causal (trained)"
        if trained
        else "chunk-causal at inference only (trained bidirectional)",
        "chunk_seconds": aura.student.config.audio_chunk_seconds,
        "piece_seconds": PIECE_SECONDS,
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats": repeats,
        "rounds_done": len(next(iter(feed.values()))),
        "threads": torch.get_num_threads(),
        "ttft": {key: summarize(values) for key, values in ttft.items()},
        "feed": {key: summarize(values) for key, values in feed.items()},
        "feed_ms_per_audio_second": {
            key: summarize(values)["median_ms"] / float(key[:-1]) for key, values in feed.items()
        },
        "answers": answers,
        "answers_identical": all(a["streamed"] == a["offline"] for a in answers.values()),
    }
    median = {key: stats["median_ms"] for key, stats in result["ttft"].items()}
    result["targets"] = {TARGET: median["streamed 30s"] <= median["offline 2s"]}
    # what the longer cache costs once the speech has ended: attention over ~375 more keys
    result["streamed_30s_over_streamed_2s"] = median["streamed 30s"] / median["streamed 2s"]
    print(", ".join(f"TTFT {key} {value:.0f} ms" for key, value in median.items()), flush=True)
    write_result("streaming", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", help="AuRA checkpoint (default: the shipped one)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    args = parser.parse_args()
    run(args.repeats, args.model, args.dtype)


if __name__ == "__main__":
    main()
