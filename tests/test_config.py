from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aura.cli.app import app
from aura.config import AuraConfig, ConfigError, load_config


def test_defaults_are_the_packaged_models() -> None:
    config = load_config()
    assert config.model.llm == "smollm2-135m-instruct"
    assert config.model.teacher == "whisper-tiny.en"
    assert config.model.lora_layers is None and config.model.k == 4
    assert config.train.stage == "distill"


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump({"model": {"k": 2, "lora_targets": ["q_proj"]}, "train": {"max_steps": 7}})
    )
    config = load_config(
        path, ["train.max_steps=20", "data.train=x.jsonl", "train.save_every=5", "train.lr=3e-4"]
    )
    assert config.model.k == 2 and config.model.lora_targets == ["q_proj"]
    assert config.train.max_steps == 20 and config.train.save_every == 5
    assert config.data.train == "x.jsonl"
    assert config.train.lr == pytest.approx(3e-4)
    assert load_config(None, ["model.lora_layers=null"]).model.lora_layers is None
    assert load_config(None, ["model.layer_map=[[0, 0], [2, 1]]"]).model.layer_map == [[0, 0], [2, 1]]


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["model.audio_attention=causal", "distill.decoder_weight=0.1"])
    config.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.max_stepz=3", "train.max_stepz"),
        ("nope.x=1", "'nope'"),
        ("train.max_steps=abc", "train.max_steps"),
        ("model.audio_attention=sideways", "bidirectional, chunk-causal, causal"),
        ("train=3", "is a section"),
        ("train.max_steps", "KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_config(None, [override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  llm: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model:\n  lora_rank: 8\n  colour: red\n")
    with pytest.raises(ConfigError, match="model.colour"):
        load_config(wrong)


def test_cli_print_config_and_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--print-config", "train.max_steps=3"])
    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["max_steps"] == 3
    assert AuraConfig.from_dict(printed) == load_config(None, ["train.max_steps=3"])
    result = runner.invoke(app, ["train", "--print-config", "train.bogus=1"])
    assert result.exit_code != 0


def test_print_config_shows_a_help_line_above_every_key() -> None:
    printed = CliRunner().invoke(app, ["train", "--print-config"]).stdout.splitlines()
    config = AuraConfig()
    for section in dataclasses.fields(config):
        for key in dataclasses.fields(getattr(config, section.name)):
            help_text = key.metadata.get("help", "")
            assert help_text and "\n" not in help_text, f"{section.name}.{key.name} has no one-line help"
            line = printed.index(f"  # {help_text}")  # the help, then the key it describes
            assert printed[line + 1].startswith(f"  {key.name}:")
