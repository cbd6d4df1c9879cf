"""A run folder on disk: its checkpoints, its finished marker, and writes that a kill never leaves half done.

RUN_DIR holds: config.yaml, metrics.csv, tb/ (TensorBoard), checkpoints/step-N/, final/ (inference
checkpoint: adapter + embedding + config; no teacher or heads), heads.safetensors (for diagnosis) and
finished.json (the step final/ was written at). Every file is written whole or not at all (to a `.tmp`
name, then renamed), and a checkpoint is complete only once its `state.pt` is in place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aura.config import AuraConfig

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.csv"
FINISHED_FILE = "finished.json"
SHARDED = "sharded"  # a sharded (FSDP) run's checkpoint: one file per process, torch.distributed.checkpoint


class TrainError(ValueError):
    """A training run that cannot start or continue, with what to do about it."""


def last_checkpoint(run_dir: Path) -> Path | None:
    return (checkpoints(run_dir) or [None])[-1]


def checkpoint_step(folder: Path) -> int:
    return int(folder.name[5:])


def finished_step(run_dir: Path) -> int | None:
    """The step at which the run last wrote final/ and stopped (None while it is unfinished)."""
    marker = Path(run_dir) / FINISHED_FILE
    return int(json.loads(marker.read_text())["step"]) if marker.is_file() else None


def finished_message(run_dir: Path, config: AuraConfig) -> str | None:
    """Why `--resume` has nothing to do in `run_dir` (it is finished), with how to go on; None otherwise.

    A run paused part-way along a longer schedule (`train.schedule_steps`) is continued by a larger
    `train.max_steps`; any other finished run is continued by a new run starting from it.
    """
    run_dir = Path(run_dir)
    step = finished_step(run_dir)
    if step is None:
        return None
    checkpoint = last_checkpoint(run_dir)
    paused = checkpoint is not None and checkpoint_step(checkpoint) == step
    if paused and config.train.max_steps > step:
        return None
    how = f"start a new run from it: aura train --out NEW_RUN_DIR train.init_from={run_dir} ..."
    if paused:
        how += f"; or continue its schedule with --resume train.max_steps=N (N > {step})"
    return (
        f"{run_dir}: this run is finished (step {step}, inference checkpoint in {run_dir / 'final'}); "
        f"--resume has nothing to continue and changed nothing. To train further, {how}."
    )


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp_path)`, then rename it over `path`: a kill leaves the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a `.tmp` folder is an interrupted save, never used)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.name[5:].isdigit() and (p / "state.pt").is_file())


def discard(folder: Path) -> None:
    """Delete a folder by first renaming it out of sight, so a kill mid-delete leaves no half folder."""
    if folder.exists():
        doomed = folder.with_name(folder.name + ".old")
        shutil.rmtree(doomed, ignore_errors=True)
        folder.rename(doomed)
        shutil.rmtree(doomed)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
