"""`python -m benchmarks [--only NAME ...]`: run the benchmarks in order; each writes results/NAME.json."""

from __future__ import annotations

import argparse
import importlib
import time

from aura.cli.app import quiet_libraries

BENCHMARKS = (
    "train_step",
    "train_profile",
    "prefill_efficiency",
    "dtype_agreement",
    "latency",
    "streaming",
    "scaling",
    "merge",
    "adapters",
    "serving",
    "llamacpp",
    "synth_engines",
    "espeak_voices",
    "probe_ceiling",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run just this one (repeatable)")
    args = parser.parse_args()
    quiet_libraries()
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{name}").run()
        print(f"== {name} done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
