"""`aura data pack`: short clips joined into long windows, every clip exactly once, in a seeded order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE, load_audio
from aura.cli import app
from aura.data.manifest import read_manifest, write_manifest
from aura.data.pack import GAP_SECONDS, pack_manifest, plan_packs
from tests.conftest import make_manifest


def test_packs_hold_every_clip_once_with_its_audio_and_words(tmp_path: Path) -> None:
    source = make_manifest(tmp_path / "data", count=12)
    clips = {ex.id: ex for ex in read_manifest(source)}
    packed = read_manifest(pack_manifest(source, tmp_path / "packed", 2.0, 4.0, seed=3, progress=False))
    assert sorted(i for ex in packed for i in ex.parts) == sorted(clips)
    assert 1 < len(packed) < len(clips)
    for ex in packed:
        members = [clips[i] for i in ex.parts]
        assert ex.transcript == " ".join(m.transcript for m in members)
        assert ex.response == " ".join(m.response for m in members)
        assert ex.prompt == members[0].prompt and ex.task == "asr"
        wave = load_audio(ex.audio)
        assert len(wave) / SAMPLE_RATE == pytest.approx(ex.duration, abs=1e-3)
        assert ex.duration <= 4.0 or len(members) == 1
        # the first clip opens the window sample for sample (16-bit rounding aside), silence follows it
        first = load_audio(members[0].audio)
        assert np.abs(wave[: len(first)] - first).max() < 2e-4
        if len(members) > 1:
            gap = wave[len(first) : len(first) + round(GAP_SECONDS[0] * SAMPLE_RATE)]
            assert np.abs(gap).max() == 0.0


def test_plan_is_seeded_and_lengths_are_checked() -> None:
    durations = [1.0 + (i % 5) * 0.5 for i in range(40)]
    assert plan_packs(durations, 5.0, 12.0, seed=1) == plan_packs(durations, 5.0, 12.0, seed=1)
    assert plan_packs(durations, 5.0, 12.0, seed=1) != plan_packs(durations, 5.0, 12.0, seed=2)
    with pytest.raises(ValueError, match="one teacher window"):
        plan_packs(durations, 10.0, 45.0, seed=0)


def test_cli_packs_and_names_a_bad_manifest(tmp_path: Path) -> None:
    source = make_manifest(tmp_path / "data", count=6)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "data",
            "pack",
            str(source),
            "--out",
            str(tmp_path / "p"),
            "--min-seconds",
            "2",
            "--max-seconds",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "p" / "manifest.jsonl")) >= 2
    result = runner.invoke(app, ["data", "pack", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "none.jsonl" in result.output


def test_untranscribed_clips_pack_into_distillation_windows(tmp_path: Path) -> None:
    source = make_manifest(tmp_path / "data", count=6)
    bare = [
        ex.model_copy(update={"task": "audio", "response": None, "transcript": None})
        for ex in read_manifest(source)
    ]
    write_manifest(bare, source)
    packed = read_manifest(
        pack_manifest(source, tmp_path / "packed", 2.0, 4.0, prefix="real", progress=False)
    )
    assert packed and all(
        ex.id.startswith("real-") and ex.task == "audio" and ex.response is None for ex in packed
    )
