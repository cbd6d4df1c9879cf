"""The logging phase: training-window means and dev-set metrics to TensorBoard and metrics.csv (one row a
log step, columns in a stable order, the file rewritten whole when a new column appears)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aura.train.run_dir import METRICS_FILE, write_atomic


class MetricsLog:
    """The `Trainer`'s logging methods."""

    def _log(self, window: dict[str, list[float]], seconds_per_step: float | None) -> None:
        means = {k: float(np.mean(v)) for k, v in window.items()}
        keys = sorted(means)
        reduced = self.acc.reduce(torch.tensor([means[k] for k in keys]), reduction="mean")
        row: dict[str, float] = {"step": self.step, "lr": self.step_lrs[0]}
        if len(self.step_lrs) > 1:
            row["head_lr"] = self.step_lrs[1]
        row.update({k: float(v) for k, v in zip(keys, reduced, strict=True)})
        row["tokens_per_s"] = (
            row.pop("tokens") * self.acc.num_processes * self.config.train.grad_accum / seconds_per_step
            if seconds_per_step
            else float("nan")
        )
        row["s_per_step"] = seconds_per_step if seconds_per_step else float("nan")
        self.acc.log({k: v for k, v in row.items() if k != "step" and not math.isnan(v)}, step=self.step)
        if self.acc.is_main_process:
            self._write_row(row)

    def _write_row(self, row: dict[str, float]) -> None:
        path = self.run_dir / METRICS_FILE
        fields = None
        if path.is_file():
            with path.open() as handle:
                fields = next(csv.reader(handle), None)
        if fields is None or not set(row) <= set(fields):
            fields = column_order(row)
            if path.is_file() and path.stat().st_size:
                with path.open() as handle:
                    old = list(csv.DictReader(handle))
                fields = column_order({**{k: 0 for r in old for k in r}, **row})

                def write(tmp: Path) -> None:
                    with tmp.open("w", newline="") as handle:
                        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
                        writer.writeheader()
                        writer.writerows(old)

                write_atomic(path, write)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            if path.stat().st_size == 0:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    @torch.no_grad()
    def _log_dev(self) -> None:
        """Distillation metrics on the dev clips (every rank computes the same numbers; rank 0 writes)."""
        self.module.eval()
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, len(self.dev_clips), self.config.train.batch_size):
            out = self.module(self._inputs(self.dev_clips[start : start + self.config.train.batch_size]))
            for key, value in out.items():
                if key != "tokens":
                    sums[key] = sums.get(key, 0.0) + float(value)
            batches += 1
        row = (
            {"step": self.step, **{f"dev_{k}": v / batches for k, v in sums.items()}}
            if batches
            else {"step": self.step}
        )
        if self.probe is not None:
            probed = self.probe.measure(self.acc.unwrap_model(self.model).student, self.config)
            row["dev_probe_wer"], row["dev_probe_loss"] = probed["wer"], probed["loss"]
            # the teacher's own states through the same path
            row["dev_probe_teacher_wer"], row["dev_probe_teacher_loss"] = (
                self.probe.teacher_wer,
                self.probe.teacher_loss,
            )
        # the listening gap calls the student's parts directly, which a sharded (FSDP) module cannot serve
        if self.config.train.stage == "joint" and len(self.dev_clips) > 1 and not self.sharded:
            from aura.distill.listening import listening

            heard = listening(
                self.acc.unwrap_model(self.model).student,
                [c.example.prompt for c in self.dev_clips],
                [c.example.response for c in self.dev_clips],
                [self._mel(c) for c in self.dev_clips],
                self.config.data.system_prompt,
                self.config.train.batch_size,
            )
            row["dev_listening_gap"] = heard["gap"]  # > 0: the LM loss rises when the audio is swapped
        self.module.train()
        self.acc.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        if self.acc.is_main_process:
            self._write_row(row)


def column_order(row: dict[str, Any]) -> list[str]:
    """step first, then losses, then per-layer metrics in layer order, then the rest."""

    def key(name: str) -> tuple:
        prefix, _, layer = name.rpartition("_")
        if layer.isdigit() and prefix.split("_")[-1] in ("cos", "ccos", "cka"):
            return (2, prefix, int(layer))
        order = ["step", "loss", "distill_loss", "lm_loss", "lr", "head_lr"]
        return (0, order.index(name), 0) if name in order else (3, name, 0)

    return sorted(row, key=key)
