"""Time to first token and total time for a 5-s spoken question: AuRA vs cascade vs bridge, one process.

All systems answer the same spoken question (with a text context, as in context-QA) through
`aura.evaluate`'s system classes, interleaved repetition by repetition so machine load hits all alike;
the result is medians and ratios against the cascade.
"""

from __future__ import annotations

from aura.evaluate import EvalItem, SystemFactory, timed_stream
from benchmarks.checkpoints import checkpoint, clips, compare_main
from benchmarks.common import summarize, write_result

CONTEXT = (
    "Context: The capital of Peru is Lima. The currency of Japan is the yen. Kenya is in Africa.\n"
    "Answer the spoken question in a few words.\n<audio>"
)


def run(repeats: int = 10, model: str | None = None, bridge_model: str | None = None) -> dict:
    wave = clips(5.0)
    item = EvalItem(id="q", task="context-qa", prompt=CONTEXT, response="", transcript="", wave=wave)
    factory = SystemFactory(
        model=checkpoint("aura", model), bridge_model=checkpoint("bridge", bridge_model), max_new_tokens=16
    )
    systems = [factory.build(name) for name in ("aura", "cascade", "bridge")]
    ttft: dict[str, list[float]] = {s.name: [] for s in systems}
    total: dict[str, list[float]] = {s.name: [] for s in systems}
    for system in systems:  # warm-up
        timed_stream(system, item)
    for _ in range(repeats):
        for system in systems:
            record = timed_stream(system, item)
            if record.error:
                raise RuntimeError(f"{system.name}: {record.error}")
            ttft[system.name].append(record.ttft_s * 1000)
            total[system.name].append(record.total_s * 1000)
    result = {
        "audio_seconds": 5.0,
        "max_new_tokens": 16,
        "repeats": repeats,
        "ttft": {name: summarize(values) for name, values in ttft.items()},
        "total": {name: summarize(values) for name, values in total.items()},
    }
    cascade_ttft = result["ttft"]["cascade"]["median_ms"]
    cascade_total = result["total"]["cascade"]["median_ms"]
    result["ttft_speedup_vs_cascade"] = {n: cascade_ttft / v["median_ms"] for n, v in result["ttft"].items()}
    result["total_speedup_vs_cascade"] = {
        n: cascade_total / v["median_ms"] for n, v in result["total"].items()
    }
    write_result("latency", result)
    return result


def main() -> None:
    compare_main(__doc__, run, repeats=10)


if __name__ == "__main__":
    main()
