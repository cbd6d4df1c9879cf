"""The docs scripts in `scripts/`, run as a user runs them, on real runs written by `aura train`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import TinyRuns, tiny_runs

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def _plot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "plot_runs.py"), *args], capture_output=True, text=True, check=False
    )


def test_plot_runs_chains_continued_runs(runs: TinyRuns, tmp_path: Path) -> None:
    with (runs.aura / "metrics.csv").open() as f:
        logged = [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(f)]
    last = logged[-1][0]
    out = tmp_path / "curves.png"
    done = _plot(
        "--out", str(out), "--metric", "loss", f"chain={runs.aura},{runs.aura}", f"one={runs.bridge}"
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    points = json.loads(out.with_suffix(".json").read_text())
    # the continuation's steps start where the first run stopped
    assert points["chain"]["loss"] == [list(p) for p in logged + [(step + last, v) for step, v in logged]]
    assert [p[0] for p in points["one"]["loss"]] == [step for step, _ in logged]


def test_plot_runs_names_what_is_wrong(runs: TinyRuns, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    assert "no metrics.csv" in _plot("--out", out, f"a={tmp_path}").stderr
    assert "expected LABEL=RUN_DIR" in _plot("--out", out, str(runs.aura)).stderr
    assert "no run logs it" in _plot("--out", out, "--metric", "nope", f"a={runs.aura}").stderr
