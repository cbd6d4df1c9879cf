"""How close AuRA's prefill comes to this machine's matmul limit, in each dtype it can run in.

Achieved FLOP/s = 2 × (LLM parameters touched per token) × tokens / prefill time, where the token
embedding table (a lookup) is excluded and the LM head counts for the last position only (the prefill
asks for one logit row). The machine's limit is torch's own matmul FLOP/s in the same dtype and threads,
measured on square and on the model's own projection shapes. The checkpoint is loaded in each dtype
with LoRA merged (`AuraModel.from_pretrained(..., dtype=..., merge=True)`, AuRA's fastest path):
bfloat16 pays only on CPUs with bf16 units (AMX, AVX512-BF16); elsewhere torch emulates it and its peak
is far below float32's, which this records.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from aura.infer.aura_model import AuraModel
from aura.infer.decoding import DTYPES
from benchmarks.checkpoints import checkpoint, clips
from benchmarks.common import timed, write_result


def matmul_flops(
    sizes: list[tuple[int, int, int]], repeats: int = 5, dtype: torch.dtype = torch.float32
) -> dict[str, float]:
    """Matmul FLOP/s in `dtype` for each of the given (m, k, n) shapes: the faster of `torch.mm` and
    `F.linear` on an `(n, k)` weight, the call the model's projections make (for emulated bf16 the two
    take different kernels, several times apart)."""
    best: dict[str, float] = {}
    for m, k, n in sizes:
        a, b, w = (
            torch.randn(m, k, dtype=dtype),
            torch.randn(k, n, dtype=dtype),
            torch.randn(n, k, dtype=dtype),
        )
        calls = (lambda a=a, b=b: torch.mm(a, b), lambda a=a, w=w: F.linear(a, w))
        median_ms = min(timed(call, repeats=repeats, warmup=2)["median_ms"] for call in calls)
        best[f"{m}x{k}x{n}"] = 2 * m * k * n / (median_ms / 1000)
    return best


def run(
    model: str | None = None, repeats: int = 10, dtypes: tuple[str, ...] = ("float32", "bfloat16")
) -> dict:
    result: dict = {"threads": torch.get_num_threads(), "dtypes": {}}
    for name in dtypes:
        result["dtypes"][name] = measure(model, repeats, DTYPES[name])
    write_result("prefill_efficiency", result)
    return result


def measure(model: str | None, repeats: int, dtype: torch.dtype) -> dict:
    """Prefill FLOP/s of 5-s and 30-s clips and the matmul peak, both in `dtype`."""
    aura = AuraModel.from_pretrained(checkpoint("aura", model), dtype=dtype, merge=True)
    llm = aura.student.llm
    config = llm.config
    d, ff = config.hidden_size, config.intermediate_size
    embed = llm.get_input_embeddings().weight.numel()
    head = config.vocab_size * d
    per_token = sum(p.numel() for p in llm.parameters()) - embed - (0 if config.tie_word_embeddings else head)
    per_token += sum(p.numel() for p in aura.student.audio.parameters()) // max(1, aura.student.config.k)
    # a dtype without matrix units here (bf16 emulated on AVX2) is many times slower than float32: time it
    # twice on the 5-s clip only rather than spend many minutes confirming that
    probe = {
        t: max(matmul_flops([(512, d, ff)], repeats=3, dtype=t).values()) for t in (torch.float32, dtype)
    }
    slow = probe[dtype] < probe[torch.float32] / 2
    repeats = 2 if slow else repeats
    rows = []
    for seconds in (5,) if slow else (5, 30):
        request = aura.request(clips(seconds), "Transcribe the audio.")
        tokens = aura.prefill([request]).embeds.shape[1]
        last = torch.tensor([tokens - 1])

        def prefill(request=request, last=last) -> None:
            with torch.inference_mode():
                batch = aura.prefill([request])
                llm(
                    inputs_embeds=batch.embeds,
                    attention_mask=batch.mask,
                    position_ids=batch.positions,
                    logits_to_keep=last,  # an index, as decoding passes it (aura.infer.streaming says why)
                )

        stats = timed(prefill, repeats=repeats, warmup=1 if slow else 2)
        flops = 2 * (per_token * tokens + head)
        rows.append(
            {
                "audio_seconds": seconds,
                "tokens": tokens,
                "prefill": stats,
                "achieved_flops": flops / (stats["median_ms"] / 1000),
            }
        )
    start = time.perf_counter()
    shapes = [(1024, 1024, 1024), (512, d, ff), (512, ff, d), (512, d, d)]
    shapes += [(row["tokens"], d, ff) for row in rows]  # the prefill's own widest projection
    machine = matmul_flops(shapes, dtype=dtype)
    peak = max(machine.values())
    for row in rows:
        row["fraction_of_matmul_peak"] = row["achieved_flops"] / peak
        print(
            f"{dtype}: {row['audio_seconds']} s audio, {row['tokens']} tokens, prefill {row['prefill']['median_ms']:.0f} ms: "
            f"{row['achieved_flops'] / 1e9:.1f} GFLOP/s = {row['fraction_of_matmul_peak']:.0%} of the "
            f"{dtype} matmul peak ({peak / 1e9:.0f} GFLOP/s)"
        )
    return {
        "slower_than_float32_matmul": slow,
        "repeats": repeats,
        "params_per_token": per_token,
        "matmul_flops": machine,
        "matmul_peak_flops": peak,
        "matmul_seconds": time.perf_counter() - start,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--dtype", action="append", choices=list(DTYPES), help="repeatable; default: float32 and bfloat16"
    )
    args = parser.parse_args()
    run(args.model, args.repeats, tuple(args.dtype or ("float32", "bfloat16")))


if __name__ == "__main__":
    main()
