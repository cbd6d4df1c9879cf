from pathlib import Path

from rich.console import Console

from aura.demo import DONE, Stage


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
