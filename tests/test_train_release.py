"""The release recipe `aura/recipes/shipped.yaml`: what ships is what the recipe makes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import make_manifest

from aura.data.manifest import read_manifest, write_manifest
from aura.registry import resolve_checkpoint
from aura.train.release import RECIPE, Release, ReleaseError, main

ROOT = Path(__file__).resolve().parents[1]


def test_each_shipped_config_is_exactly_its_recipe_stage() -> None:
    """Every key of a shipped config.yaml, its data paths and start included, is what the stage resolves to."""
    release = Release.load()
    assert set(release.ship().values()) == {"aura-smollm2-135m", "aura-smollm2-135m-bridge"}
    for run, checkpoint in release.ship().items():
        shipped = yaml.safe_load((resolve_checkpoint(checkpoint) / "config.yaml").read_text())
        assert shipped == release.stage_config(run).to_dict(), checkpoint


def test_stages_read_and_start_from_only_what_the_recipe_makes() -> None:
    release = Release.load(out="o", steps={"more": 7})
    made = release.manifest_paths()
    earlier: list[str] = []
    for name in release.stages():
        config = release.stage_config(name)
        assert config.data.train in made and config.data.dev in made, name
        # a stage starts fresh or from a run the recipe trained before it
        assert config.train.init_from is None or config.train.init_from in {f"o/{e}" for e in earlier}, name
        earlier.append(name)
    assert release.stage_config("joint8k").train.max_steps == 7
    assert release.stage_config("joint8k").train.schedule_steps == 3000
    assert set(release.ship()) <= set(earlier)
    commands = " ".join(arg for args in release.commands().values() for arg in args)
    assert {"o/deep8k", "o/bridgedeep", "o/data/test-asr/manifest.jsonl"} <= set(
        commands.replace(",", " ").split()
    )


@pytest.mark.parametrize("recipe", sorted(RECIPE.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_trains_on_what_it_makes_and_evaluates_what_it_trains(recipe: Path) -> None:
    """Each recipe file (the release and the studies): every stage's data, probe and start are made by
    the recipe itself or an earlier stage, and every run its commands name is one it trains."""
    if "stages" not in (yaml.safe_load(recipe.read_text()) or {}):
        pytest.skip(f"{recipe.name} is a training config, not a recipe")
    release = Release.load(recipe, out="o")
    made = release.manifest_paths()
    earlier: list[str] = []
    for name in release.stages():
        config = release.stage_config(name)
        for path in (config.data.train, config.data.dev, config.data.probe):
            assert path is None or path in made, (name, path)
        assert config.train.init_from is None or config.train.init_from in {f"o/{e}" for e in earlier}, name
        earlier.append(name)
    named: set[str] = set()
    for args in release.commands().values():
        outputs = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--out"}
        named |= {a for arg in args for a in arg.replace(",", " ").replace("=", " ").split()} - outputs
    runs = {arg for arg in named if arg.startswith("o/") and arg.count("/") == 1}
    assert runs <= {f"o/{e}" for e in earlier}
    data = {arg for arg in named if arg.startswith("o/data/")}
    assert data <= made


def test_manifests_are_joined_and_picked_in_order(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 1)):
        folder = tmp_path / "out" / "data" / name
        clips = read_manifest(make_manifest(folder, count=3, seed=seed))
        write_manifest(
            [ex.model_copy(update={"id": f"{name}{ex.id}"}) for ex in clips], folder / "manifest.jsonl"
        )
    (tmp_path / "pick.ids").write_text("bclip2\naclip0\n")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["manifests"] = {
        "both.jsonl": {"join": ["a", "b"]},
        "picked.jsonl": {"pick": "pick.ids", "from": "both.jsonl"},
        "packed": {"pack": "a", "min_seconds": 2.0, "max_seconds": 4.0},
        "long.jsonl": {"join": ["packed", "b"]},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    release = Release.load(tmp_path / "recipe.yaml", out=str(tmp_path / "out"))
    release.write_manifests()
    data = tmp_path / "out" / "data"
    both = read_manifest(data / "both.jsonl")
    assert [ex.audio for ex in both] == [
        ex.audio for n in "ab" for ex in read_manifest(data / n / "manifest.jsonl")
    ]
    assert [ex.id for ex in read_manifest(data / "picked.jsonl")] == ["bclip2", "aclip0"]
    packed = read_manifest(data / "packed" / "manifest.jsonl")
    assert sorted(i for ex in packed for i in ex.parts) == ["aclip0", "aclip1", "aclip2"]
    assert f"{data}/packed/manifest.jsonl" in release.manifest_paths()
    assert [ex.id for ex in read_manifest(data / "long.jsonl")][-3:] == ["bclip0", "bclip1", "bclip2"]
    (tmp_path / "pick.ids").write_text("clip9\n")
    (data / "picked.jsonl").unlink()
    with pytest.raises(ReleaseError, match="picked.jsonl: 1 ids of pick.ids are not in both.jsonl"):
        release.write_manifests()


def test_bad_requests_name_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stages", "--steps", "more=lots"]) == 2
    assert "--steps more=lots: expected NAME=N" in capsys.readouterr().err
    assert main(["stages", "--steps", "mor=5"]) == 2
    assert "no such step count" in capsys.readouterr().err
    assert main(["stages", "--only", "deep8k joint9k"]) == 2
    assert "no run named 'joint9k'" in capsys.readouterr().err
    assert main(["stages", "--only", "deep8k"]) == 0
    assert capsys.readouterr().out.startswith("deep8k\tdata.train=runs/shipped/data/train.jsonl\t")


def test_script_refuses_an_unknown_run_name_before_making_anything(tmp_path: Path) -> None:
    env = {**os.environ, "ONLY": "bridge bridge9k", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_shipped.sh"), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "no run named 'bridge9k'" in done.stderr
    assert not (tmp_path / "out").exists()
