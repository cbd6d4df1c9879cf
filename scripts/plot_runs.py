"""Dev curves of training runs side by side: one panel per metric, one line per run.

A run is `LABEL=RUN_DIR` or a chain `LABEL=RUN_DIR,RUN_DIR2,...` (a run continued with
`train.init_from`): each later run's steps continue from the previous run's last step, so a joint stage
and its continuation read as one curve.

    .venv/bin/python scripts/plot_runs.py --out docs/img/joint-listening.png \
        aura=runs/shipped/joint,runs/shipped/joint8k,runs/shipped/deep8k \
        no-distillation=runs/shipped/nodistill,runs/shipped/nodistill8k,runs/shipped/nodistilldeep
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path


def read_chain(dirs: list[str], metrics: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points along the chain of runs, steps offset run by run."""
    curves: dict[str, list[tuple[int, float]]] = {m: [] for m in metrics}
    offset = 0
    for run in dirs:
        path = Path(run) / "metrics.csv"
        if not path.is_file():
            raise SystemExit(f"{path}: no metrics.csv (is {run} a training run directory?)")
        last = 0
        with path.open() as f:
            for row in csv.DictReader(f):
                step = int(row["step"])
                last = max(last, step)
                for m in metrics:
                    # a continuation's step 0 repeats its parent's last dev point
                    if row.get(m) and not (curves[m] and curves[m][-1][0] == offset + step):
                        curves[m].append((offset + step, float(row[m])))
        offset += last
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...]")
    parser.add_argument(
        "--metric",
        action="append",
        help="metrics.csv column (repeatable; default dev_listening_gap, dev_lm_loss)",
    )
    parser.add_argument("--out", required=True, help="PNG file; the points go beside it as JSON")
    args = parser.parse_args()
    metrics = args.metric or ["dev_listening_gap", "dev_lm_loss"]
    data = {}
    for spec in args.runs:
        label, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"{spec!r}: expected LABEL=RUN_DIR[,RUN_DIR...]")
        data[label] = read_chain(dirs.split(","), metrics)
    for metric in metrics:
        if not any(curves[metric] for curves in data.values()):
            raise SystemExit(f"--metric {metric}: no run logs it (see the header of each run's metrics.csv).")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_rows = math.ceil(len(data) / 2)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5 * len(metrics), 3.6 + 0.3 * legend_rows), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, curves in data.items():
            if curves[metric]:
                steps, values = zip(*curves[metric], strict=True)
                ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    # below the panels, so no curve is hidden behind it
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.07 * legend_rows, 1, 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
