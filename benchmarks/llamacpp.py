"""The llama.cpp backend beside torch on the shipped checkpoint: greedy agreement and time to first token.

The checkpoint is exported once per base type (`aura export --format gguf --gguf-type f32|f16|q8_0|source`,
`source` being the registry's own Q4_1 file) and every backend answers the same requests:

- agreement: held-out spoken sentences transcribed greedily (32 tokens), the token sequences compared
  with the torch backend's (float32, LoRA unmerged: the weights the registry's GGUF dequantizes to);
- speed: a 5-s spoken question with a short text context, timed through `run_batch` from the moment the
  clip is in memory to the first text piece (log-mel, embedding layer, prefill, first token) and on to
  exactly 32 tokens (end-of-turn ignored), the same threads for both runtimes (2 by default),
  interleaved round by round so machine load hits all alike.

On a CPU shared with other jobs (more runnable threads than cores) give `--threads 1`: ggml's worker
threads wait for each other spinning, so two of them that do not get their cores at the same time are
several times slower than one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from aura.audio.features import load_audio
from aura.infer.aura_model import AuraModel
from aura.infer.chat import ChatModel
from aura.infer.decoding import GenerationRequest, Row
from aura.infer.gguf_export import LLM_FILE, MANIFEST, export_gguf
from aura.infer.llamacpp import LlamaCppModel
from aura.registry import DEFAULT_CHECKPOINT
from benchmarks.checkpoints import WORK, clips
from benchmarks.common import summarize, write_result
from benchmarks.latency import CONTEXT

BASE_TYPES = ("f32", "f16", "q8_0", "source")
MAX_NEW_TOKENS = 32


def exported(model: AuraModel, base_type: str) -> Path:
    """The checkpoint's GGUF export with `base_type`, written once under benchmarks/work."""
    folder = WORK / f"gguf-{model.name}-{base_type}"
    if not (folder / MANIFEST).is_file():
        export_gguf(model, folder, base_type=base_type)
    return folder


def greedy_tokens(model: ChatModel, request: GenerationRequest) -> list[int]:
    """The token ids a backend generates for `request` (not its text: two token runs can read alike)."""
    if isinstance(model, AuraModel):
        decoding = model.decoding([request])
        for _ in decoding:
            pass
        return decoding.rows[0].tokens
    row = Row(model.tokenizer, request, torch.device("cpu"))
    for _ in model._pieces(request, row):  # type: ignore[attr-defined]
        pass
    return row.tokens


def timed(model: ChatModel, request: GenerationRequest) -> tuple[float, float]:
    """(TTFT ms, decoding tokens/s after the first token) of one request decoded to `max_new_tokens`."""
    first: list[float] = []

    def on_text(_row: int, _piece: str) -> bool:
        if not first:
            first.append(time.perf_counter())
        return True

    stops, model.stop_ids = model.stop_ids, set()  # type: ignore[attr-defined]
    start = time.perf_counter()
    try:
        result = model.run_batch([request], on_text=on_text)[0]
    finally:
        model.stop_ids = stops  # type: ignore[attr-defined]
    end = time.perf_counter()
    assert first and result.completion_tokens == request.max_new_tokens
    return (first[0] - start) * 1000, (result.completion_tokens - 1) / (end - first[0])


def run(
    repeats: int = 5,
    model: str | None = None,
    agreement_clips: int = 12,
    threads: int = 2,
    base_types: tuple[str, ...] = BASE_TYPES,
) -> dict:
    torch.set_num_threads(threads)
    name = model or DEFAULT_CHECKPOINT
    reference = AuraModel.from_pretrained(name)
    backends: dict[str, ChatModel] = {"torch": reference}
    sizes = {}
    for base_type in base_types:
        folder = exported(reference, base_type)
        label = "llama.cpp-q4_1" if base_type == "source" else f"llama.cpp-{base_type}"
        backends[label] = LlamaCppModel.from_pretrained(folder, threads=threads)
        sizes[label] = (folder / LLM_FILE).stat().st_size
    speech = WORK / "speech"
    clips(5.0, speech)  # synthesizes the held-out sentences once
    waves = [load_audio(p) for p in sorted((speech / "audio").glob("*.wav"))[:agreement_clips]]
    print(f"greedy agreement on {len(waves)} clips", flush=True)
    answers = {
        label: [greedy_tokens(m, reference.request(w, max_new_tokens=MAX_NEW_TOKENS)) for w in waves]
        for label, m in backends.items()
    }
    agreement = {}
    for label, got in answers.items():
        if label == "torch":
            continue
        prefix = [
            next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), min(len(x), len(y)))
            for x, y in zip(answers["torch"], got, strict=True)
        ]
        agreement[label] = {
            "identical": sum(x == y for x, y in zip(answers["torch"], got, strict=True)),
            "of": len(waves),
            "tokens_agreeing_before_first_difference": sum(prefix),
            "torch_tokens": sum(len(x) for x in answers["torch"]),
        }
    request = reference.request(clips(5.0, speech), CONTEXT, max_new_tokens=MAX_NEW_TOKENS)
    ttft: dict[str, list[float]] = {label: [] for label in backends}
    rate: dict[str, list[float]] = {label: [] for label in backends}
    for m in backends.values():  # warm-up
        timed(m, request)
    for round_ in range(repeats):
        print(f"timing round {round_ + 1}/{repeats}", flush=True)
        for label, m in backends.items():
            first_ms, per_s = timed(m, request)
            ttft[label].append(first_ms)
            rate[label].append(per_s)
    result = {
        "checkpoint": name,
        "threads": threads,
        "audio_seconds": 5.0,
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats": repeats,
        "llm_gguf_bytes": sizes,
        "greedy_agreement_with_torch": agreement,
        "ttft": {label: summarize(v) for label, v in ttft.items()},
        "decode_tokens_per_s": {label: statistics.median(v) for label, v in rate.items()},
    }
    result["ttft_vs_torch"] = {
        label: result["ttft"][label]["median_ms"] / result["ttft"]["torch"]["median_ms"] for label in backends
    }
    write_result("llamacpp", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", help=f"AuRA checkpoint (default: the shipped {DEFAULT_CHECKPOINT})")
    parser.add_argument("--clips", type=int, default=12, help="held-out clips for the greedy agreement")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch and of llama.cpp")
    parser.add_argument("--types", default=",".join(BASE_TYPES), help="base GGUF types to export and run")
    args = parser.parse_args()
    run(args.repeats, args.model, args.clips, args.threads, tuple(args.types.split(",")))


if __name__ == "__main__":
    main()
