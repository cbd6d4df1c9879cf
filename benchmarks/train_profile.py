"""Where a joint training step's time goes, in float32 and under bfloat16 autocast (`train.bf16=true`).

The same student, batch and step as `benchmarks/train_step.py` (SmolLM2-135M + Whisper tiny.en, batch 8).
For each precision: wall time per step, the user and system CPU time the process spent in it (a high
system share means page faults and allocator churn: glibc returning large blocks to the kernel and
faulting them back every step), and a torch.profiler breakdown of one step by operator, grouped into
matrix multiplies, attention, casts/copies and the rest. Beside it, torch's own matmul FLOP/s at the
step's shapes in both dtypes: the speed-up bf16 could bring at most. Then the float32 step again in
child processes with jemalloc and tcmalloc preloaded (`LD_PRELOAD`, when the Debian packages
libjemalloc2 / libtcmalloc-minimal4 are installed). Writes `benchmarks/results/train_profile.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import write_result
from benchmarks.prefill_efficiency import matmul_flops
from benchmarks.train_step import StepBench, bench_config

STAGE = "joint"
ALLOCATORS = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}
GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"),
    "attention": ("scaled_dot_product", "flash_attention", "efficient_attention", "aten::_softmax"),
    "casts_copies": ("aten::_to_copy", "aten::copy_", "aten::to", "aten::clone", "aten::contiguous"),
    "optimizer": ("Optimizer.step", "aten::_foreach", "aten::addcdiv", "aten::lerp"),
}


def group_of(name: str) -> str:
    for group, keys in GROUPS.items():
        if any(key in name for key in keys):
            return group
    return "elementwise_and_other"


def timed_steps(bench: StepBench, precision: str, steps: int) -> dict:
    """Wall, user and system seconds per step (after one warm-up step)."""
    bench.step(STAGE, precision)
    walls, users, systems, faults = [], [], [], []
    for _ in range(steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        bench.step(STAGE, precision)
        after = resource.getrusage(resource.RUSAGE_SELF)
        walls.append(time.perf_counter() - start)
        users.append(after.ru_utime - before.ru_utime)
        systems.append(after.ru_stime - before.ru_stime)
        faults.append(after.ru_minflt - before.ru_minflt)
    cpu = sum(users) + sum(systems)
    return {
        "seconds_per_step": statistics.median(walls),
        "user_s_per_step": statistics.median(users),
        "system_s_per_step": statistics.median(systems),
        "system_share": sum(systems) / cpu if cpu else 0.0,
        "minor_page_faults_per_step": statistics.median(faults),
    }


def op_profile(bench: StepBench, precision: str, top: int = 15) -> dict:
    """Self CPU time of one step by operator (top `top`) and by group, in seconds."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bench.step(STAGE, precision)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    groups: dict[str, float] = {}
    for event in events:
        group = group_of(event.key)
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "self_cpu_s": total,
        "groups_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_ops": [
            {"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in events[:top]
        ],
    }


def child(precision: str, steps: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bench = StepBench.build(bench_config(None, None, None), batch_size, Path(tmp))
        bench.config.train.stage = STAGE
        return timed_steps(bench, precision, steps)


def _child_run(env: dict[str, str], steps: int, threads: int) -> dict:
    """`timed_steps` of the float32 joint step in a fresh process with `env` (allocator, OpenMP policy)."""
    command = [sys.executable, "-m", "benchmarks.train_profile", "--child", "fp32", "--steps", str(steps)]
    command += ["--threads", str(threads)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(batch_size: int = 8, steps: int = 1, allocator_steps: int = 2) -> dict:
    config = bench_config(None, None, None)
    result: dict = {
        "stage": STAGE,
        "batch_size": batch_size,
        "llm": config.model.llm,
        "threads": torch.get_num_threads(),
        "precisions": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        bench = StepBench.build(config, batch_size, Path(tmp))
        for precision in ("fp32", "bf16"):
            row = timed_steps(bench, precision, steps)
            row["profile"] = op_profile(bench, precision)
            result["precisions"][precision] = row
            groups = ", ".join(f"{k} {v:.2f} s" for k, v in row["profile"]["groups_s"].items())
            print(
                f"{STAGE} {precision}: {row['seconds_per_step']:.2f} s/step, system share {row['system_share']:.0%}; {groups}"
            )
        tokens = int(bench.step(STAGE, "fp32"))
    d, ff = 576, 1536  # SmolLM2-135M's width and MLP width
    shapes = [(tokens, d, ff), (tokens, ff, d), (tokens, d, d)]
    result["tokens_per_step"] = tokens
    result["matmul_flops"] = {
        name: matmul_flops(shapes, dtype=dtype)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    peak = {name: max(values.values()) for name, values in result["matmul_flops"].items()}
    result["matmul_bf16_speedup"] = peak["bf16"] / peak["fp32"]
    fp32, bf16 = result["precisions"]["fp32"], result["precisions"]["bf16"]
    result["step_bf16_speedup"] = fp32["seconds_per_step"] / bf16["seconds_per_step"]
    result["matmul_s_per_step"] = {
        p: r["profile"]["groups_s"].get("matmul", 0.0) for p, r in result["precisions"].items()
    }
    result["allocators"] = {}
    for name, library in {"glibc": None, **ALLOCATORS}.items():
        if library is not None and not Path(library).is_file():
            continue
        env = {**os.environ, "LD_PRELOAD": library} if library else dict(os.environ)
        result["allocators"][name] = _child_run(env, allocator_steps, torch.get_num_threads())
    # two threads on a shared machine: libgomp's default active wait spins on cores other jobs need
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result["omp_wait_policy_2_threads"] = {
        policy: _child_run(
            base if policy == "default" else {**base, "OMP_WAIT_POLICY": policy}, allocator_steps, 2
        )
        for policy in ("default", "PASSIVE")
    }
    print(
        f"bf16 step speed-up {result['step_bf16_speedup']:.2f}x; matmul bf16/fp32 {result['matmul_bf16_speedup']:.2f}x; "
        + "; ".join(
            f"{k}: {v['seconds_per_step']:.2f} s, sys {v['system_share']:.0%}"
            for k, v in result["allocators"].items()
        )
    )
    write_result("train_profile", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per precision, after a warm-up")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--child", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch_size)))
    else:
        run(args.batch_size, args.steps)


if __name__ == "__main__":
    main()
