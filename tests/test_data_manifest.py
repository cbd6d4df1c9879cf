"""Manifest schema, reading/writing, and `aura data check` on planted faults (each reported with its line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE
from aura.cli.app import app
from aura.data.manifest import Example, ManifestError, read_manifest, scan_manifest, write_manifest


def _clip(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)
    return path


def _row(i: int, **changes: object) -> str:
    row: dict[str, object] = {
        "id": f"ex{i}",
        "audio": "audio/ok.wav",
        "task": "asr",
        "prompt": "Transcribe: <audio>",
        "response": "hello there",
        "transcript": "hello there",
        "duration": 1.0,
    }
    row.update(changes)
    return json.dumps({k: v for k, v in row.items() if v is not None})


@pytest.fixture()
def faulty(tmp_path: Path) -> Path:
    """A manifest with one fault per line from line 2 on (line 1 and the last line are good)."""
    (tmp_path / "audio").mkdir()
    _clip(tmp_path / "audio" / "ok.wav", 1.0)
    _clip(tmp_path / "audio" / "long.wav", 2.5)
    (tmp_path / "audio" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    (tmp_path / "audio" / "cut.wav").write_bytes(
        _clip(tmp_path / "audio" / "whole.wav", 1.0).read_bytes()[:8044]
    )
    lines = [
        _row(1),  # 1 good
        '{"id": "ex2", "audio": ',  # 2 bad JSON
        _row(3, response=None),  # 3 no response for a task that needs one
        _row(4, audio="audio/missing.wav"),  # 4 missing file
        _row(5, audio="audio/corrupt.wav"),  # 5 corrupt audio
        _row(6, duration=1.5),  # 6 duration mismatch
        _row(7, audio="audio/long.wav", duration=2.5),  # 7 over the 2-s limit used below
        _row(1),  # 8 duplicate id
        _row(9, prompt="<audio> and <audio>"),  # 9 two placeholders
        _row(10, colour="red"),  # 10 unknown field
        _row(11, audio="audio/cut.wav", duration=0.25),  # 11 truncated: the header promises 1 s
        _row(12),  # 12 good
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


EXPECTED = {
    2: "not valid JSON",
    3: "task 'asr' needs a response",
    4: "does not exist",
    5: "does not decode",
    6: "duration says 1.500 s but the audio is 1.000 s",
    7: "over the limit of 2 s",
    8: "duplicate id 'ex1' (first on line 1)",
    9: "2 '<audio>' placeholders",
    10: "unknown field 'colour'",
    11: "the file is truncated: its header declares 1.000 s of audio but it holds only 0.250 s",
}


def test_check_reports_each_planted_fault_with_its_line(faulty: Path) -> None:
    result = CliRunner().invoke(app, ["data", "check", str(faulty), "--max-seconds", "2"])
    assert result.exit_code == 1
    for line, message in EXPECTED.items():
        reported = [x for x in result.output.splitlines() if x.startswith(f"{faulty}:{line}: ")]
        assert reported and message in " ".join(reported), (line, result.output)
    assert f"{faulty}:1:" not in result.output and f"{faulty}:12:" not in result.output
    assert "10 problem(s)" in result.output and "2 example(s) are fine" in result.output


def test_check_skip_bad_writes_rejects_and_read_manifest_agrees(faulty: Path) -> None:
    result = CliRunner().invoke(app, ["data", "check", str(faulty), "--max-seconds", "2", "--skip-bad"])
    assert result.exit_code == 0, result.output
    rejects = [json.loads(x) for x in (faulty.parent / "rejects.jsonl").read_text().splitlines()]
    assert sorted({r["line"] for r in rejects}) == sorted(EXPECTED)
    assert all(r["raw"] and r["reason"] and r["file"] == str(faulty) for r in rejects)

    with pytest.raises(ManifestError) as err:
        read_manifest(faulty, max_seconds=2.0, check_audio=True)
    assert len(err.value.problems) == len(EXPECTED) and "--skip-bad" in str(err.value)
    good = read_manifest(faulty, max_seconds=2.0, check_audio=True, skip_bad=True)
    assert [ex.id for ex in good] == ["ex1", "ex12"]
    assert Path(good[0].audio).is_absolute() and Path(good[0].audio).is_file()


def test_write_then_read_round_trip_keeps_paths_relative(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    clip = _clip(tmp_path / "clips" / "a.wav", 0.5)
    example = Example(
        id="a", audio=str(clip), task="spoken-qa", prompt="<audio>\nAnswer.", response="Paris", duration=0.5
    )
    path = write_manifest([example], tmp_path / "sets" / "m.jsonl")
    stored = json.loads(path.read_text())
    assert stored["audio"] == "../clips/a.wav" and "transcript" not in stored
    (loaded,) = read_manifest(path, check_audio=True)
    assert loaded.model_copy(update={"audio": str(clip)}) == example


def test_missing_or_empty_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        scan_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    _, problems = scan_manifest(tmp_path / "empty.jsonl")
    assert [p.message for p in problems] == ["the manifest has no examples"]
