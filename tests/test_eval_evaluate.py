"""`aura eval`: scoring a hand-made manifest against hand-computed numbers, every system end to end on
tiny random models (report, table, plots, recorded failures), the CLI, and cascade + text on real models."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_runs import TinyRuns, tiny_runs
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE
from aura.cli.app import app, main
from aura.data.manifest import Example, read_manifest, write_manifest
from aura.eval.evaluate import run_eval
from aura.eval.items import EvalError, load_items
from aura.eval.latency import Record, latency_summary
from aura.eval.report import SystemReport, score, write_report
from aura.eval.systems import parse_systems


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def _hand_manifest(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        ("a1", "asr", "Transcribe: <audio>", "The cat sat on the mat.", "the cat sat on the mat", None),
        (
            "q1",
            "context-qa",
            "France's capital is Paris. Lyon is big. <audio>",
            "Paris",
            "what is the capital of france",
            ["Lyon"],
        ),
        (
            "q2",
            "context-qa",
            "<audio> Name the tower in Paris.",
            "the Eiffel Tower",
            "which tower is in paris",
            ["Paris"],
        ),
    ]
    examples = []
    for i, (ex_id, task, prompt, response, transcript, distractors) in enumerate(rows):
        sf.write(folder / f"{ex_id}.wav", np.zeros(8000 + 1600 * i, dtype=np.float32), SAMPLE_RATE)
        examples.append(
            Example(
                id=ex_id,
                audio=f"{ex_id}.wav",
                task=task,
                prompt=prompt,
                response=response,
                transcript=transcript,
                duration=(8000 + 1600 * i) / SAMPLE_RATE,
                distractors=distractors,
            )
        )
    return write_manifest(examples, folder / "hand.jsonl")


def test_hand_made_manifest_scores_match_hand_computation(tmp_path: Path) -> None:
    items = load_items(_hand_manifest(tmp_path / "data"))
    predictions = ["the cat sat on a mat", "Paris.", "Eiffel Tower in Paris"]
    metrics = score(items, predictions)
    # asr: "the cat sat on the mat" vs "the cat sat on a mat": 1 substitution in 6 words;
    # characters: "the" -> "a" is 1 substitution + 2 deletions over 22 characters
    assert metrics["asr"]["wer"] == pytest.approx(1 / 6)
    assert metrics["asr"]["cer"] == pytest.approx(3 / 22)
    # q1: exact after normalisation (EM 1, F1 1); q2: gold "eiffel tower" (article dropped), prediction
    # "eiffel tower in paris": EM 0, P = 2/4, R = 2/2, F1 = 2/3; both contain their answer, but q2 also
    # names its distractor "Paris", so accuracy counts q1 only
    qa = metrics["context-qa"]
    assert (qa["n"], qa["em"], qa["contained"], qa["accuracy"]) == (2, 0.5, 1.0, 0.5)
    assert qa["f1"] == pytest.approx((1 + 2 / 3) / 2)

    records = [
        Record(item.id, item.task, p, ttft_s=0.1 * (i + 1), total_s=0.2 * (i + 1), duration_s=item.duration)
        for i, (item, p) in enumerate(zip(items, predictions, strict=True))
    ]
    latency = latency_summary(records)
    assert latency["ttft_ms_median"] == pytest.approx(200.0)
    assert latency["total_ms_median"] == pytest.approx(400.0)
    # RTF per example: 0.2/0.5, 0.4/0.6, 0.6/0.7 -> median 0.4/0.6
    assert latency["rtf"] == pytest.approx(0.4 / 0.6)
    report = write_report(
        [SystemReport("hand", records, metrics, latency)], items, "hand.jsonl", tmp_path / "out"
    )
    assert report["systems"]["hand"]["metrics"]["asr"]["wer"] == pytest.approx(1 / 6)
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| hand | 16.7% | 13.6% | 50.0% | 83.3% | 100.0% | 50.0% | 200 (120-280) | 400 |" in table
    assert table.count("| system |") == 1
    # q1 offers Paris or Lyon, q2 the Eiffel Tower or Paris: a blind pick is right half the time
    assert report["chance_accuracy"] == {"context-qa": 0.5} and "context-qa 50.0%" in table


def test_parse_systems_rejects_unknown_and_repeated() -> None:
    assert parse_systems("aura, text,nd=runs/nd") == {"aura": None, "text": None, "nd": "runs/nd"}
    with pytest.raises(EvalError, match="unknown system 'wav2vec'"):
        parse_systems("aura,wav2vec")
    with pytest.raises(EvalError, match="listed twice"):
        parse_systems("text,text")
    with pytest.raises(EvalError, match="a new name"):
        parse_systems("aura=runs/other")


def test_eval_all_systems_on_tiny_models(runs: TinyRuns, tmp_path: Path) -> None:
    # two asr examples, then two QA ones; the last has no gold transcript: the `text` system fails on it,
    # records it and goes on. `whisper` answers only the asr examples, the cascades and `text` only the QA
    examples = read_manifest(runs.manifest)[:4]
    examples[2] = examples[2].model_copy(update={"task": "spoken-qa"})
    examples[3] = examples[3].model_copy(update={"task": "spoken-qa", "transcript": None})
    manifest = write_manifest(examples, runs.manifest.parent / "eval.jsonl")
    out = tmp_path / "eval"
    report = run_eval(
        manifest,
        "aura,bridge,cascade,cascade-beam,text,whisper",
        out,
        model=runs.aura,
        bridge_model=runs.bridge / "final",
        beam_size=2,
        max_new_tokens=4,
        throughput_items=2,
        progress=False,
    )
    saved = json.loads((out / "report.json").read_text())
    assert saved["n"] == 4 and saved["data"] == str(manifest)
    assert set(saved["systems"]) == {"aura", "bridge", "cascade", "cascade-beam", "text", "whisper"}
    tasks = {name: set(system["metrics"]) for name, system in saved["systems"].items()}
    assert tasks == {
        "aura": {"asr", "spoken-qa"},
        "bridge": {"asr", "spoken-qa"},
        "whisper": {"asr"},
        "cascade": {"spoken-qa"},
        "cascade-beam": {"spoken-qa"},
        "text": {"spoken-qa"},
    }
    assert saved["systems"]["whisper"]["metrics"]["asr"]["n"] == 2
    assert saved["systems"]["aura"]["metrics"]["spoken-qa"]["n"] == 2
    for name, system in saved["systems"].items():
        latency = system["latency"]
        assert 0 < latency["ttft_ms_median"] <= latency["total_ms_median"] + 1e-6, name
        assert latency["rtf"] > 0 and latency["throughput_b8"]["examples_per_s"] > 0, name
        if "asr" in system["metrics"]:
            assert system["metrics"]["asr"]["cer"] >= 0.0 and math.isfinite(system["metrics"]["asr"]["wer"])
    assert saved["systems"]["text"]["failed"] == 1
    assert "no transcript" in saved["systems"]["text"]["failures"][0]["error"]
    assert all(saved["systems"][n]["failed"] == 0 for n in ("aura", "bridge", "cascade", "cascade-beam"))
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 * 4 + 3 * 2 + 2
    table = (out / "report.md").read_text()
    assert table.count("| system |") == 1 and all(f"| {n} |" in table for n in saved["systems"])
    for png in ("accuracy_vs_ttft.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["plots"] == [str(out / "accuracy_vs_ttft.png"), str(out / "latency.png")]


def test_eval_refuses_mismatched_base_models(runs: TinyRuns, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="same base LLM and teacher"):
        run_eval(runs.manifest, "aura,text", tmp_path, model=runs.aura, llm="smollm2-135m-instruct", limit=1)


def test_cli_eval_writes_report_and_errors_in_one_line(
    runs: TinyRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    argv = ["eval", "--data", str(runs.manifest), "--out", str(out), "--limit", "1", "--quiet"]
    # an extra checkpoint under its own name (how an ablation sits beside `aura` in one table)
    systems = f"whisper,mine={runs.aura}"  # text and cascade answer QA only: this manifest is asr
    result = CliRunner().invoke(app, [*argv, "--systems", systems, "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert "| whisper |" in result.stdout and "| mine |" in result.stdout
    first = json.loads((out / "report.json").read_text())
    assert first["n"] == 1
    # rescoring reuses the predictions and timings: same numbers, same single answered example
    result = CliRunner().invoke(app, ["eval", "--data", str(runs.manifest), "--out", str(out), "--rescore"])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "report.json").read_text())
    assert again["n"] == 1 and again["systems"] == first["systems"]
    result = CliRunner().invoke(
        app, ["eval", "--data", str(runs.manifest), "--out", str(tmp_path), "--rescore"]
    )
    assert result.exit_code != 0 and "no readable report.json" in str(result.exception)
    monkeypatch.setattr(sys, "argv", ["aura", *argv, "--systems", "aura,text"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "needs --model" in err and "Traceback" not in err


@pytest.mark.real
def test_cascade_and_text_on_real_models(tmp_path: Path) -> None:
    """Whisper tiny.en + SmolLM2-135M-Instruct on freshly synthesized asr and context-qa test clips, through
    transformers (`cascade`, `text`) and through faster-whisper + llama.cpp on the same files (`cascade-fast`)."""
    from aura.data.synth import synthesize

    manifests = [
        synthesize(task, 2, tmp_path / task, split="test", seed=3, workers=1, progress=False)
        for task in ("asr", "context-qa")
    ]
    out = tmp_path / "out"
    systems = "cascade,cascade-fast,text"
    report = run_eval(manifests, systems, out, throughput_items=1, max_new_tokens=20, progress=False)
    assert report["n"] == 4 and report["tasks"] == {"asr": 2, "context-qa": 2}
    for name in systems.split(","):
        system = report["systems"][name]
        assert system["failed"] == 0
        # not ASR systems: asked to transcribe, a chat LLM copies or paraphrases; they answer the QA only
        assert set(system["metrics"]) == {"context-qa"}
        assert 0 < system["latency"]["ttft_ms_median"] <= system["latency"]["total_ms_median"]
    answers = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {a["task"] for a in answers} == {"context-qa"}
    assert all(a["prediction"] for a in answers)
    assert (out / "accuracy_vs_ttft.png").is_file() and (out / "latency.png").is_file()


def test_clips_over_30_seconds_are_evaluated(tmp_path: Path) -> None:
    """Inference reads long audio in 30-s windows, so evaluation takes the long prompts of real sets."""
    t = np.arange(35 * SAMPLE_RATE) / SAMPLE_RATE
    sf.write(tmp_path / "long.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)
    row = Example(id="long", audio="long.wav", task="asr", prompt="<audio>", response="a", duration=35.0)
    items = load_items(write_manifest([row], tmp_path / "m.jsonl"))
    assert len(items) == 1 and items[0].wave.size == 35 * SAMPLE_RATE
