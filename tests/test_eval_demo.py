"""`aura demo`: resumable stages, and the whole demo on the shipped checkpoints at a tiny budget."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from aura.eval.demo import DONE, DemoBudget, Stage, _budget_changed, run_demo


def _stage(tmp_path: Path, fresh: bool = False) -> Stage:
    return Stage(Console(quiet=True), tmp_path, fresh)


def test_finished_stage_is_reused_and_fresh_redoes_it(tmp_path: Path) -> None:
    calls: list[str] = []
    folder = tmp_path / "data"
    _stage(tmp_path).run("data", folder, lambda: calls.append("run"))
    assert (folder / DONE).is_file() and calls == ["run"]
    _stage(tmp_path).run("data", folder, lambda: calls.append("again"))
    assert calls == ["run"]
    _stage(tmp_path, fresh=True).run("data", folder, lambda: calls.append("fresh"))
    assert calls == ["run", "fresh"]


def test_interrupted_training_stage_keeps_its_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "distill"
    (run / "checkpoints" / "step-5").mkdir(parents=True)
    seen: list[bool] = []
    _stage(tmp_path).run(
        "train", run, lambda: seen.append((run / "checkpoints" / "step-5").is_dir()), resumable=True
    )
    assert seen == [True]
    partial = tmp_path / "eval"
    (partial / "half.json").parent.mkdir(parents=True)
    (partial / "half.json").write_text("{}")
    _stage(tmp_path).run("eval", partial, lambda: seen.append((partial / "half.json").exists()))
    assert seen == [True, False]


TINY = DemoBudget(
    test_asr=2,
    test_qa=2,
    real=0,
    bridge=True,
    diagnose_clips=2,
    adapt_train=2,
    adapt_dev=2,
    adapt_steps=1,
    adapt_wer=True,
    batch_size=2,
    max_new_tokens=4,
)


@pytest.mark.real
def test_demo_on_the_shipped_checkpoints(tmp_path: Path) -> None:
    """Every stage on the shipped checkpoints and real Whisper/SmolLM2, two clips each, one training step."""
    out = tmp_path / "demo"
    summary = run_demo(out, budget=TINY)
    shipped = summary["shipped"]
    # transcription rows come from the systems that transcribe; the cascade and text answer QA only
    assert set(shipped["synthetic asr"]) == {"whisper", "aura", "bridge"}
    assert set(shipped["synthetic context-qa"]) == {"aura", "bridge", "cascade", "text"}
    assert all(entry["n"] == 2 and entry["ttft_ms"] > 0 for entry in shipped["synthetic asr"].values())
    assert 0 < summary["qa_chance"] < 1
    adaptation = summary["adaptation"]
    assert adaptation["before"]["step"] == 0 and adaptation["after"]["step"] == 1
    for when in ("before", "after"):
        assert adaptation[when]["dev_lm_loss"] > 0 and adaptation[when]["wer"] >= 0
    assert summary["alignment"]["clips"] == 2 and -1 <= summary["alignment"]["mean_cka"] <= 1
    assert summary["notes"] == "real speech: not asked for."
    saved = json.loads((out / "demo.json").read_text())
    assert saved["shipped"] == shipped
    report = (out / "demo.md").read_text()
    assert "chance (one of the offered candidates)" in report and "text ceiling" in report
    assert "| cascade" not in report.split("## Transcription")[1].split("## Training")[0]
    for plot in saved["files"]["plots"]:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun reuses every finished stage and reports the same numbers
    again = run_demo(out, budget=TINY)
    assert set(again["stage_seconds"].values()) == {0.0}
    assert again["shipped"] == shipped and again["adaptation"] == adaptation


def test_a_folder_made_with_another_size_is_redone(tmp_path: Path) -> None:
    console = Console(quiet=True)
    assert not _budget_changed(console, tmp_path, TINY)
    assert not _budget_changed(console, tmp_path, TINY)
    # reused stages would hold other clips and steps than the tables name
    assert _budget_changed(console, tmp_path, replace(TINY, adapt_steps=2))
    assert json.loads((tmp_path / "budget.json").read_text())["adapt_steps"] == 2
