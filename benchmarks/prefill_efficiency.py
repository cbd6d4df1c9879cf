"""How close AuRA's prefill comes to this machine's fp32 matmul limit.

Achieved FLOP/s = 2 × (LLM parameters touched per token) × tokens / prefill time, where the token
embedding table (a lookup) is excluded and the LM head counts for the last position only (the prefill
asks for one logit row). The machine's limit is torch's own fp32 matmul FLOP/s, same threads, measured
on square and on the model's own projection shapes.
"""

from __future__ import annotations

import argparse
import time

import torch

from aura.infer import AuraModel
from benchmarks.checkpoints import checkpoint, clips
from benchmarks.common import timed, write_result


def matmul_flops(sizes: list[tuple[int, int, int]], repeats: int = 5) -> dict[str, float]:
    """Best fp32 matmul FLOP/s over the given (m, k, n) shapes."""
    best: dict[str, float] = {}
    for m, k, n in sizes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        median_ms = timed(lambda a=a, b=b: torch.mm(a, b), repeats=repeats, warmup=2)["median_ms"]
        best[f"{m}x{k}x{n}"] = 2 * m * k * n / (median_ms / 1000)
    return best


def run(model: str | None = None, repeats: int = 10) -> dict:
    aura = AuraModel.from_pretrained(checkpoint("aura", model))
    llm = aura.student.llm
    config = llm.config
    d, ff = config.hidden_size, config.intermediate_size
    embed = llm.get_input_embeddings().weight.numel()
    head = config.vocab_size * d
    per_token = sum(p.numel() for p in llm.parameters()) - embed - (0 if config.tie_word_embeddings else head)
    per_token += sum(p.numel() for p in aura.student.audio.parameters()) // max(1, aura.student.config.k)
    rows = []
    for seconds in (5, 30):
        request = aura.request(clips(seconds), "Transcribe the audio.")

        def prefill(request=request) -> None:
            with torch.inference_mode():
                batch = aura.prefill([request])
                llm(
                    inputs_embeds=batch.embeds,
                    attention_mask=batch.mask,
                    position_ids=batch.positions,
                    logits_to_keep=1,
                )

        tokens = aura.prefill([request]).embeds.shape[1]
        stats = timed(prefill, repeats=repeats, warmup=2)
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
    machine = matmul_flops([(1024, 1024, 1024), (512, d, ff), (512, ff, d), (512, d, d)])
    peak = max(machine.values())
    for row in rows:
        row["fraction_of_matmul_peak"] = row["achieved_flops"] / peak
        print(
            f"{row['audio_seconds']} s audio, {row['tokens']} tokens: {row['achieved_flops'] / 1e9:.1f} GFLOP/s = {row['fraction_of_matmul_peak']:.0%} of matmul peak"
        )
    result = {
        "params_per_token": per_token,
        "matmul_flops": machine,
        "matmul_peak_flops": peak,
        "matmul_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    write_result("prefill_efficiency", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    run(args.model, args.repeats)


if __name__ == "__main__":
    main()
