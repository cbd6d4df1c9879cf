"""`aura data import`: LibriSpeech-style folders, CSV/TSV, and `save_to_disk` datasets; bad items are reported."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE
from aura.cli.app import app
from aura.data.importers import (
    ASTERISK_AUDIO,
    ASTERISK_TRANSCRIPTS,
    asterisk_half,
    import_asterisk,
    import_corpus,
)
from aura.data.manifest import ManifestError, read_manifest


def _tone(path: Path, seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


@pytest.fixture()
def libri(tmp_path: Path) -> Path:
    """speaker 19 / chapter 198: two 16-kHz flacs and one 22.05-kHz stereo flac, LibriSpeech layout."""
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "19" / "198"
    chapter.mkdir(parents=True)
    _tone(chapter / "19-198-0000.flac", 1.0)
    _tone(chapter / "19-198-0001.flac", 1.5)
    _tone(chapter / "19-198-0002.flac", 0.5, rate=22050, channels=2)
    (chapter / "19-198.trans.txt").write_text(
        "19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK WAS FINISHED\n19-198-0002 IN THE YEAR\n"
    )
    return tmp_path / "LibriSpeech"


def test_librispeech_import_copies_resamples_and_checks(libri: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["data", "import", "--from", "librispeech", str(libri), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    examples = {ex.id: ex for ex in read_manifest(out / "manifest.jsonl", check_audio=True)}
    assert sorted(examples) == ["19-198-0000", "19-198-0001", "19-198-0002"]
    first = examples["19-198-0000"]
    assert first.response == "Northanger abbey" and first.transcript == "northanger abbey"
    assert first.task == "asr" and "<audio>" in first.prompt and first.duration == pytest.approx(1.0)
    assert Path(first.audio).suffix == ".flac"  # already 16 kHz mono: copied as is
    resampled = sf.info(examples["19-198-0002"].audio)
    assert (resampled.samplerate, resampled.channels) == (SAMPLE_RATE, 1)
    assert examples["19-198-0002"].duration == pytest.approx(0.5, abs=0.01)
    assert CliRunner().invoke(app, ["data", "check", str(out / "manifest.jsonl")]).exit_code == 0


def test_librispeech_bad_items_fail_with_file_and_line_or_go_to_rejects(libri: Path, tmp_path: Path) -> None:
    chapter = libri / "dev-clean" / "19" / "198"
    (chapter / "19-198-0001.flac").write_bytes(b"fLaC broken")
    (chapter / "19-198.trans.txt").write_text(
        (chapter / "19-198.trans.txt").read_text() + "19-198-0003 A MISSING CLIP\n"
    )
    _tone(chapter / "19-198-0009.flac", 0.5)  # audio with no transcript line
    _tone(chapter / "19-198-0000.flac", 3.0)  # now over the limit used below
    trans = str(chapter / "19-198.trans.txt")

    out = tmp_path / "out"
    args = ["data", "import", "--from", "librispeech", str(libri), "--out", str(out), "--max-seconds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert f"{trans}:1: " in result.output and "over the limit of 2 s" in result.output
    assert f"{trans}:2: " in result.output and "not a readable audio file" in result.output
    assert f"{trans}:4: audio" in result.output and "does not exist" in result.output
    assert "19-198-0009.flac:0: no line for this clip" in result.output
    assert not (out / "manifest.jsonl").exists()

    result = CliRunner().invoke(app, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert [ex.id for ex in read_manifest(out / "manifest.jsonl")] == ["19-198-0002"]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 4 and {r["line"] for r in rejects} == {0, 1, 2, 4}


def test_csv_and_tsv_import(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    _tone(tmp_path / "clips" / "a.wav", 0.8)
    _tone(tmp_path / "clips" / "b.wav", 0.6, rate=8000)
    (tmp_path / "list.csv").write_text('path,text\nclips/a.wav,"Hello, world."\nclips/b.wav,Good morning\n')
    (tmp_path / "list.tsv").write_text("clips/a.wav\tHello there\n")

    manifest, count, rejected = import_corpus("csv", tmp_path / "list.csv", tmp_path / "o1", progress=False)
    assert (count, rejected) == (2, 0)
    examples = read_manifest(manifest, check_audio=True)
    assert [ex.response for ex in examples] == ["Hello, world.", "Good morning"]
    assert [ex.transcript for ex in examples] == ["hello world", "good morning"]
    assert sf.info(examples[1].audio).samplerate == SAMPLE_RATE

    manifest, count, _ = import_corpus(
        "csv", tmp_path / "list.tsv", tmp_path / "o2", reference=True, progress=False
    )
    (example,) = read_manifest(manifest)
    assert (
        count == 1 and Path(example.audio) == (tmp_path / "clips" / "a.wav").resolve()
    )  # referenced in place


def test_csv_missing_columns_and_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("path,text\nnope.wav,hello\nonly-one-column\n")
    with pytest.raises(ManifestError) as err:
        import_corpus("csv", tmp_path / "bad.csv", tmp_path / "o", progress=False)
    messages = [str(p) for p in err.value.problems]
    assert any(":2: audio file" in m and "does not exist" in m for m in messages)
    assert any(":3: expected path and text columns" in m for m in messages)


def test_hf_disk_import(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    paths = [_tone(tmp_path / f"c{i}.wav", 0.5 + 0.25 * i, rate=[16000, 22050][i]) for i in range(2)]
    table = datasets.Dataset.from_dict(
        {"audio": [str(p) for p in paths], "sentence": ["red cat", "blue dog"]}
    )
    table = table.cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    for p in paths:
        p.unlink()  # the saved dataset must carry the audio itself

    result = CliRunner().invoke(
        app, ["data", "import", "--from", "hf-disk", str(tmp_path / "hf"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    examples = read_manifest(tmp_path / "o" / "manifest.jsonl", check_audio=True)
    assert [(ex.id, ex.transcript) for ex in examples] == [
        ("test-000000", "red cat"),
        ("test-000001", "blue dog"),
    ]
    assert examples[1].duration == pytest.approx(0.75, abs=0.01)


def test_unknown_source_and_missing_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "import", "--from", "mp3s", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    with pytest.raises(ValueError, match="not a LibriSpeech-style folder"):
        import_corpus("librispeech", tmp_path, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_corpus("csv", tmp_path / "nope.csv", tmp_path / "o", progress=False)


def test_asterisk_import_of_a_fixture_made_of_real_speech(tmp_path: Path) -> None:
    """8-kHz espeak prompts and a gzipped `name: text` list with a tone, a silence and a missing clip."""
    from aura.data.engines import get_engine

    sounds = tmp_path / "sounds"
    (sounds / "digits").mkdir(parents=True)
    prompts = {
        "auth-thankyou": "Thank you.",
        "digits/7": "Seven.",
        "call-waiting": "Call waiting.",
        "letters/at": "at [@]",
        "check-number": "Please check the number and dial again.",
    }
    espeak = get_engine("espeak")
    for name, text in prompts.items():
        wave = espeak.speak(text.replace("[@]", ""), "en-us", {"rate": 150, "pitch": 50})
        (sounds / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(sounds / f"{name}.wav", wave[::2], 8000)  # 16 kHz -> 8 kHz, as the package ships it
    lines = ["; Core Asterisk Sounds in English", ""] + [f"{n}: {t}" for n, t in prompts.items()]
    lines += ["beep: [this is a simple beep tone]", "silence/1: (1 second of silence)", "gone: Not here."]
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    halves = import_asterisk(tmp_path / "out", audio_dir=sounds, transcripts=transcripts, progress=False)
    rows = {half: read_manifest(path, check_audio=True) for half, (path, _, _) in halves.items()}
    ids = {half: {ex.id for ex in exs} for half, exs in rows.items()}
    assert ids["dev"] | ids["test"] == {
        "auth-thankyou",
        "digits-7",
        "call-waiting",
        "letters-at",
        "check-number",
    }
    assert not ids["dev"] & ids["test"] and all(asterisk_half(i) == h for h, s in ids.items() for i in s)
    by_id = {ex.id: ex for exs in rows.values() for ex in exs}
    assert by_id["letters-at"].transcript == "at" and by_id["digits-7"].transcript == "7"
    for ex in by_id.values():
        info = sf.info(ex.audio)
        assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1) and ex.task == "asr"
    rejected = [
        json.loads(x) for h in halves.values() if h[2] for x in (h[0].parent / "rejects.jsonl").open()
    ]
    assert [r["raw"] for r in rejected] == ["gone Not here."] and "not in the package" in rejected[0][
        "reason"
    ]
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-en"):
        import_asterisk(tmp_path / "o", audio_dir=sounds, transcripts=tmp_path / "none.gz", progress=False)


@pytest.mark.skipif(
    not ASTERISK_TRANSCRIPTS.is_file() or not ASTERISK_AUDIO.is_dir(), reason="no Asterisk prompts"
)
def test_asterisk_import_of_the_installed_package(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    result = CliRunner().invoke(app, ["data", "import", "--from", "asterisk", "--out", str(out)])
    assert result.exit_code == 0, result.output
    dev, test = (read_manifest(out / half / "manifest.jsonl", max_seconds=120) for half in ("dev", "test"))
    assert len(dev) + len(test) > 540 and abs(len(dev) - len(test)) < 40
    assert not {ex.id for ex in dev} & {ex.id for ex in test}
    assert all(
        ex.transcript and "[" not in ex.response and "second of silence" not in ex.response for ex in dev
    )
    assert max(ex.duration for ex in dev + test) > 30  # long prompts are kept: eval reads them in windows


def test_audio_folder_import_is_untranscribed_audio_for_distillation(tmp_path: Path) -> None:
    """Spoken clips at 8 and 16 kHz in nested folders, and a silent one that teaches nothing."""
    from aura.data.engines import get_engine

    src = tmp_path / "recordings"
    (src / "fr").mkdir(parents=True)
    espeak = get_engine("espeak")
    wave = espeak.speak("Please hold the line.", "en-us", {"rate": 150, "pitch": 50})
    sf.write(src / "hold.wav", wave, SAMPLE_RATE)
    sf.write(src / "fr" / "hold-8k.ogg", wave[::2], 8000)
    sf.write(src / "fr" / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    (src / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["data", "import", "--from", "audio-folder", str(src), "--out", str(out), "--skip-bad"]
    )
    assert result.exit_code == 0, result.output
    examples = read_manifest(out / "manifest.jsonl")
    assert [ex.id for ex in examples] == ["fr-hold-8k", "hold"]
    assert all(ex.task == "audio" and ex.response is None and ex.transcript is None for ex in examples)
    assert sf.info(examples[0].audio).samplerate == SAMPLE_RATE  # the 8-kHz ogg was resampled
    rejected = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and "no sound" in rejected[0]["reason"] and "quiet.wav" in rejected[0]["file"]
    with pytest.raises(ValueError, match="not a folder"):
        import_corpus("audio-folder", src / "hold.wav", tmp_path / "o2", progress=False)
