"""Time to first token and total time for a 5-s spoken question: AuRA against every baseline.

All systems answer the same spoken question (with a short text context, as in context-QA) through
`aura.eval.evaluate`'s system classes, timed from the moment the clip is in memory (the end of the audio),
interleaved repetition by repetition so machine load hits all alike. Each system runs in its own worker
process, as a deployment runs it: CTranslate2 brings its own OpenMP runtime, and once faster-whisper has
run in a process, torch's prefill there stays about twice as slow (measured: 91 ms alone, 175–200 ms after
one faster-whisper call), so one shared process would time an interaction no user has. Only one worker
computes at a time; the others wait on their pipe.

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

import multiprocessing
import time
from multiprocessing.connection import Connection

import numpy as np
import torch

from aura.eval.items import EvalItem
from aura.eval.latency import Record, timed_stream
from aura.eval.systems import CheckpointSystem, System, SystemFactory
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
# requests arrive apart: an OpenMP runtime's worker threads spin for a while after their work (Intel's
# for 200 ms by default), and a request timed straight after another process's would pay for that spin
GAP_S = 0.5
SYSTEMS = ("aura", "aura-bf16", "aura-bf16-merged", "cascade-fast", "bridge", "cascade")
TARGETS = {"cascade-fast": 0.2, "bridge": 0.5}  # the speed targets: AuRA's fastest TTFT at most this share


def _build(name: str, model: str, bridge_model: str) -> System:
    """System `name` with the benchmark's checkpoints; the bf16 ones load in bfloat16."""
    if name in ("aura-bf16", "aura-bf16-merged"):
        # merged: no adapter matmuls at all, the fastest path for a deployment that only takes audio
        loaded = AuraModel.from_pretrained(model, dtype=torch.bfloat16, merge=name.endswith("merged"))
        return CheckpointSystem(loaded, name=name, max_new_tokens=MAX_NEW_TOKENS)
    factory = SystemFactory(model=model, bridge_model=bridge_model, max_new_tokens=MAX_NEW_TOKENS)
    return factory.build(name)


def _worker(
    conn: Connection, name: str, model: str, bridge_model: str, wave: np.ndarray, threads: int
) -> None:
    """Build one system, answer once to warm up, then time one answer per request until told to stop."""
    torch.set_num_threads(threads)
    item = EvalItem(id="q", task="context-qa", prompt=CONTEXT, response="", transcript="", wave=wave)
    system = _build(name, model, bridge_model)
    conn.send(timed_stream(system, item))
    while conn.recv():
        conn.send(timed_stream(system, item))


def run(repeats: int = 10, model: str | None = None, bridge_model: str | None = None) -> dict:
    wave = clips(5.0)
    model, bridge_model = str(model or DEFAULT_CHECKPOINT), str(bridge_model or SHIPPED_BRIDGE)
    threads = torch.get_num_threads()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no runtime shared with this one
    workers: dict[str, Connection] = {}
    processes = []
    for name in SYSTEMS:
        ours, theirs = spawn.Pipe()
        process = spawn.Process(target=_worker, args=(theirs, name, model, bridge_model, wave, threads))
        process.start()
        theirs.close()  # the worker's end lives in the worker: if it dies, recv() here raises EOFError
        workers[name] = ours
        processes.append(process)
    ttft: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    total: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    answers = {name: conn.recv().prediction for name, conn in workers.items()}  # built and warmed up
    for _ in range(repeats):
        for name, conn in workers.items():
            time.sleep(GAP_S)
            conn.send(True)
            record: Record = conn.recv()
            if record.error:
                raise RuntimeError(f"{name}: {record.error}")
            ttft[name].append(record.ttft_s * 1000)
            total[name].append(record.total_s * 1000)
    for conn in workers.values():
        conn.send(False)
    for process in processes:
        process.join()
    result: dict = {
        "audio_seconds": 5.0,
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats": repeats,
        "threads": threads,
        "processes": "one worker process per system",
        "checkpoints": {"aura": model, "bridge": bridge_model},
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
