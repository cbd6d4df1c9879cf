"""What folding LoRA into the weights buys: TTFT and decoding speed, merged vs unmerged, on the shipped
checkpoint, and what it costs: whether text-only answers stay the base LLM's.

Unmerged, every adapted projection runs its LoRA matrices beside the base weight (two extra small
matmuls per projection and token); merged, they are folded in and cost nothing, but the adapter can no
longer be switched off, so text-only requests get the speech-tuned LLM. Both models answer the same
requests, interleaved repetition by repetition so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationRequest, reference_answers
from aura.model.llm import load_llm
from aura.registry import DEFAULT_CHECKPOINT
from benchmarks.checkpoints import clips
from benchmarks.common import summarize, write_result
from benchmarks.latency import CONTEXT

MAX_NEW_TOKENS = 32
TEXT_QUESTIONS = ("What is the capital of France?", "What is 7 times 8?", "List three colors.")


def timed_request(model: AuraModel, request: GenerationRequest) -> tuple[float, float]:
    """(TTFT ms, decoding tokens/s after the first token) of one request, decoded to exactly
    `max_new_tokens` (end-of-turn tokens ignored) so both models decode the same amount."""
    decoding = model.decoding([request])
    decoding.stop_ids = set()
    adapter_off = not model.merged and not request.audio  # what run_batch does for text-only requests
    first = None
    start = time.perf_counter()
    with model.student.llm.disable_adapter() if adapter_off else contextlib.nullcontext():
        for _ in decoding:
            first = first or time.perf_counter()
    end = time.perf_counter()
    tokens = len(decoding.rows[0].tokens)
    assert first is not None and tokens == request.max_new_tokens
    return (first - start) * 1000, (tokens - 1) / (end - first)


def base_answers(name: str) -> list[str]:
    """The base LLM's greedy answers, run by plain transformers with the same chat template."""
    return [text for text, _ in reference_answers(*load_llm(name), TEXT_QUESTIONS, MAX_NEW_TOKENS)]


def run(repeats: int = 10, model: str | None = None) -> dict:
    name = model or DEFAULT_CHECKPOINT
    models = {
        "unmerged": AuraModel.from_pretrained(name, merge=False),
        "merged": AuraModel.from_pretrained(name, merge=True),
    }
    unmerged = models["unmerged"]
    audio = unmerged.request(clips(5.0), CONTEXT, max_new_tokens=MAX_NEW_TOKENS)
    text = unmerged.request(prompt=TEXT_QUESTIONS[0], max_new_tokens=MAX_NEW_TOKENS)
    kinds = {"audio": audio, "text": text}
    ttft = {m: {k: [] for k in kinds} for m in models}
    rate = {m: {k: [] for k in kinds} for m in models}
    for m in models.values():  # warm-up
        for request in kinds.values():
            timed_request(m, request)
    for _ in range(repeats):
        for label, m in models.items():
            for kind, request in kinds.items():
                first_ms, tokens_per_s = timed_request(m, request)
                ttft[label][kind].append(first_ms)
                rate[label][kind].append(tokens_per_s)
    expected = base_answers(unmerged.student.config.llm)
    text_answers = {
        label: [m.generate(prompt=q, max_new_tokens=MAX_NEW_TOKENS) for q in TEXT_QUESTIONS]
        for label, m in models.items()
    }
    result: dict = {
        "checkpoint": str(name),
        "audio_seconds": 5.0,
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats": repeats,
        "ttft": {m: {k: summarize(v) for k, v in kinds_.items()} for m, kinds_ in ttft.items()},
        "decode_tokens_per_s": {
            m: {k: statistics.median(v) for k, v in kinds_.items()} for m, kinds_ in rate.items()
        },
        "text_only": {
            "questions": list(TEXT_QUESTIONS),
            "base_llm": expected,
            **{
                label: {"answers": answers, "same_as_base_llm": answers == expected}
                for label, answers in text_answers.items()
            },
        },
    }
    result["merged_speedup"] = {
        kind: {
            "ttft": result["ttft"]["unmerged"][kind]["median_ms"]
            / result["ttft"]["merged"][kind]["median_ms"],
            "decode": result["decode_tokens_per_s"]["merged"][kind]
            / result["decode_tokens_per_s"]["unmerged"][kind],
        }
        for kind in kinds
    }
    write_result("merge", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", help=f"AuRA checkpoint (default: the shipped {DEFAULT_CHECKPOINT})")
    args = parser.parse_args()
    run(args.repeats, args.model)


if __name__ == "__main__":
    main()
