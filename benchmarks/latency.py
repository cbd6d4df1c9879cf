"""Time to first token and total time for a 5-s spoken question: AuRA against every baseline, one process.

All systems answer the same spoken question (with a short text context, as in context-QA) through
`aura.eval.evaluate`'s system classes, timed from the moment the clip is in memory (the end of the audio),
interleaved repetition by repetition so machine load hits all alike:

- `aura` (float32) and `aura-bf16` (`dtype=torch.bfloat16`), LoRA a separate adapter as `aura eval` runs
  them, and `aura-bf16-merged` (LoRA folded into the weights, `merge=True`: what a deployment that takes
  only audio runs); the fastest of the three is AuRA's fastest path on this machine;
- `cascade-fast`: faster-whisper (CTranslate2 int8) then llama.cpp on the GGUF, the cascade users run;
- `bridge`: the shipped bridge baseline (Whisper encoder + projector);
- `cascade`: transformers Whisper then the torch LLM.

The checkpoints default to the shipped ones (speed depends on sizes, not on what the weights learned).
The result is medians and, from the same run, the ratios of AuRA's fastest path to each baseline.
"""

from __future__ import annotations

import torch

from aura.eval.items import EvalItem
from aura.eval.latency import timed_stream
from aura.eval.systems import CheckpointSystem, SystemFactory
from aura.infer.aura_model import AuraModel
from aura.registry import DEFAULT_CHECKPOINT
from benchmarks.checkpoints import clips, compare_main
from benchmarks.common import summarize, write_result

CONTEXT = (
    "Context: The capital of Peru is Lima. The currency of Japan is the yen. Kenya is in Africa.\n"
    "Answer the spoken question in a few words.\n<audio>"
)
SHIPPED_BRIDGE = "aura-smollm2-135m-bridge"
MAX_NEW_TOKENS = 16
TARGETS = {"cascade-fast": 0.2, "bridge": 0.5}  # issue 25: AuRA's fastest TTFT at most this share of theirs


def run(repeats: int = 10, model: str | None = None, bridge_model: str | None = None) -> dict:
    wave = clips(5.0)
    item = EvalItem(id="q", task="context-qa", prompt=CONTEXT, response="", transcript="", wave=wave)
    model = model or DEFAULT_CHECKPOINT
    factory = SystemFactory(
        model=model, bridge_model=bridge_model or SHIPPED_BRIDGE, max_new_tokens=MAX_NEW_TOKENS
    )
    bf16 = AuraModel.from_pretrained(model, dtype=torch.bfloat16)
    # merged: no adapter matmuls at all, the fastest path for a deployment that only takes audio
    bf16_merged = AuraModel.from_pretrained(model, dtype=torch.bfloat16, merge=True)
    systems = [
        factory.build("aura"),
        CheckpointSystem(bf16, name="aura-bf16", max_new_tokens=MAX_NEW_TOKENS),
        CheckpointSystem(bf16_merged, name="aura-bf16-merged", max_new_tokens=MAX_NEW_TOKENS),
        *(factory.build(name) for name in ("cascade-fast", "bridge", "cascade")),
    ]
    ttft: dict[str, list[float]] = {s.name: [] for s in systems}
    total: dict[str, list[float]] = {s.name: [] for s in systems}
    answers = {}
    for system in systems:  # warm-up
        answers[system.name] = timed_stream(system, item).prediction
    for _ in range(repeats):
        for system in systems:
            record = timed_stream(system, item)
            if record.error:
                raise RuntimeError(f"{system.name}: {record.error}")
            ttft[system.name].append(record.ttft_s * 1000)
            total[system.name].append(record.total_s * 1000)
    result: dict = {
        "audio_seconds": 5.0,
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "checkpoints": {"aura": str(model), "bridge": str(bridge_model or SHIPPED_BRIDGE)},
        "ttft": {name: summarize(values) for name, values in ttft.items()},
        "total": {name: summarize(values) for name, values in total.items()},
        "answers": answers,
    }
    median = {name: stats["median_ms"] for name, stats in result["ttft"].items()}
    fastest = min((name for name in median if name.startswith("aura")), key=median.__getitem__)
    result["aura_fastest_path"] = fastest
    result["aura_fastest_ttft_over"] = {
        name: median[fastest] / value for name, value in median.items() if not name.startswith("aura")
    }
    result["targets"] = {
        f"ttft <= {share}x {name}": result["aura_fastest_ttft_over"][name] <= share
        for name, share in TARGETS.items()
    }
    cascade_total = result["total"]["cascade"]["median_ms"]
    result["ttft_speedup_vs_cascade"] = {n: median["cascade"] / v for n, v in median.items()}
    result["total_speedup_vs_cascade"] = {
        n: cascade_total / v["median_ms"] for n, v in result["total"].items()
    }
    for name in median:
        print(f"{name}: TTFT {median[name]:.0f} ms, total {result['total'][name]['median_ms']:.0f} ms")
    print(f"AuRA fastest path ({fastest}) TTFT / baseline: {result['aura_fastest_ttft_over']}")
    write_result("latency", result)
    return result


def main() -> None:
    compare_main(__doc__, run, repeats=10, default="the shipped one")


if __name__ == "__main__":
    main()
