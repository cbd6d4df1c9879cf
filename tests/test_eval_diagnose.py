"""`aura diagnose`: per-layer alignment numbers checked against direct computation, the decoder probe,
the JSON + plot it writes, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_runs import TinyRuns, tiny_runs
from typer.testing import CliRunner

from aura.cli.app import app
from aura.distill.heads import DistillHeads, linear_cka
from aura.distill.listening import listening
from aura.eval.diagnose import Clip, attention_to_audio, diagnose, layer_alignment
from aura.model.checkpoint import run_folders


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def test_layer_alignment_matches_direct_computation() -> None:
    torch.manual_seed(0)
    heads = DistillHeads([(0, 0), (2, 1)], student_width=8, teacher_width=4)
    heads.target_mean.normal_()
    student = {0: [torch.randn(5, 8), torch.randn(3, 8)], 2: [torch.randn(5, 8), torch.randn(3, 8)]}
    teacher = {0: [torch.randn(5, 4), torch.randn(3, 4)], 1: [torch.randn(5, 4), torch.randn(3, 4)]}
    rows = layer_alignment(heads.pairs, student, teacher, heads)
    x, y = torch.cat(student[2]), torch.cat(teacher[1])
    with torch.no_grad():
        prediction = heads.heads[1](x)
    mean = heads.target_mean[1]
    assert rows[1]["student"] == 2 and rows[1]["teacher"] == 1
    assert rows[1]["cka"] == pytest.approx(float(linear_cka(x, y)), abs=1e-6)
    assert rows[1]["cosine"] == pytest.approx(float(F.cosine_similarity(prediction, y).mean()), abs=1e-6)
    centred = F.cosine_similarity(prediction - mean, y - mean).mean()
    assert rows[1]["centred_cosine"] == pytest.approx(float(centred), abs=1e-6)
    # without heads only the head-free measure is reported; identical states give CKA 1
    same = layer_alignment([(0, 0)], {0: [y]}, {0: [y]}, None)
    assert same == [{"student": 0, "teacher": 0, "cka": pytest.approx(1.0, abs=1e-5)}]


def test_diagnose_writes_alignment_and_probe(runs: TinyRuns, tmp_path: Path) -> None:
    assert run_folders(runs.aura / "final") == run_folders(runs.aura) == (runs.aura / "final", runs.aura)
    result = diagnose(
        runs.aura / "final", runs.manifest, tmp_path, limit=3, compare_untrained=True, progress=False
    )
    saved = json.loads((tmp_path / "alignment.json").read_text())
    assert saved["clips"] == 3 and saved["heads"] == str(runs.aura / "heads.safetensors")
    assert [(row["student"], row["teacher"]) for row in saved["layers"]] == [(0, 0), (1, 1), (2, 2)]
    for row in saved["layers"]:
        assert 0.0 <= row["cka"] <= 1.0 + 1e-6 and 0.0 <= row["untrained_cka"] <= 1.0 + 1e-6
        for key in ("cosine", "centred_cosine", "mean_target_cosine"):
            assert -1.0 <= row[key] <= 1.0
    probe = saved["probe"]
    assert probe["teacher_layer"] == 2 and probe["clips"] == 3 and len(probe["examples"]) == 3
    assert all(math.isfinite(probe[k]) for k in ("student_wer", "teacher_pooled_wer", "teacher_wer"))
    assert result["mean"]["cka"] == pytest.approx(sum(r["cka"] for r in saved["layers"]) / 3)
    heard = saved["listening"]
    assert heard["clips"] == 3 and heard["own_audio_lm_loss"] > 0
    assert heard["gap"] == pytest.approx(heard["other_audio_lm_loss"] - heard["own_audio_lm_loss"])
    assert heard["by_position"][0]["tokens"] == "1"
    assert saved["attention"]["clips"] == 3 and 0 < saved["attention"]["audio"] < 1
    assert (tmp_path / "alignment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_to_audio_measures_the_span_and_the_transcript(runs: TinyRuns) -> None:
    from aura.model.llm import decoder_layers
    from aura.model.student import AuraStudent

    student = AuraStudent.from_pretrained(runs.aura / "final").eval()
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(8000 * (2 + i)).astype(np.float32) for i in range(2)]
    clips = [
        Clip("a", "say <audio> now", "one two", "one two", waves[0]),
        Clip("b", "", "three", None, waves[1]),  # no reference: counted for the audio only
    ]
    mels = [student.audio_features(w) for w in waves]
    result = attention_to_audio(student, clips, mels)
    blocks = len(decoder_layers(student.llm))
    assert (
        result["clips"] == 2
        and len(result["audio_per_layer"]) == len(result["transcript_per_layer"]) == blocks
    )
    assert 0 < result["audio"] < 1 and 0 < result["transcript"] < 1
    batch = student.build_batch([student.render_prompt("say <audio> now")], [[mels[0]]])
    assert result["audio_tokens"] == pytest.approx(
        (int(batch.audio_mask.sum()) + mels[1].shape[1] // 8) / 2, abs=1
    )
    assert result["transcript_tokens"] == len(
        student.tokenizer(" one two", add_special_tokens=False)["input_ids"]
    )
    assert student.llm.get_base_model().config._attn_implementation != "eager"  # restored


def test_listening_gap_is_zero_only_when_the_audio_does_not_change(runs: TinyRuns) -> None:
    from aura.model.student import AuraStudent

    student = AuraStudent.from_pretrained(runs.aura / "final").eval()
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(16000 * (1 + i)).astype(np.float32) for i in range(4)]
    mels = [student.audio_features(w) for w in waves]
    prompts, responses = ["Transcribe: <audio>"] * 4, [f"word {i} here" for i in range(4)]
    same = listening(student, prompts, responses, [mels[0]] * 4)
    assert same["gap"] == pytest.approx(0.0, abs=1e-5)
    assert all(row["gap"] == pytest.approx(0.0, abs=1e-5) for row in same["by_position"])
    heard = listening(student, prompts, responses, mels)
    assert abs(heard["gap"]) > 1e-4  # random weights react to audio
    # the positions split the same tokens: first answer token alone, counts and means add up
    rows = heard["by_position"]
    assert rows[0]["tokens"] == "1" and rows[0]["count"] == 4
    total = sum(row["count"] for row in rows)
    for key in ("own_audio_lm_loss", "other_audio_lm_loss"):
        assert sum(row[key] * row["count"] for row in rows) / total == pytest.approx(heard[key], rel=1e-5)
    # the per-token losses are the terms of the training loss
    batch = student.build_batch([student.render_prompt(p) for p in prompts], [[m] for m in mels], responses)
    with torch.no_grad():
        loss, _ = student.forward_lm(batch)
        nll = student.response_nll(batch)
    assert [len(row) for row in nll] == [int((r != -100).sum()) for r in batch.labels[:, 1:]]
    assert torch.cat(nll).mean().item() == pytest.approx(loss.item(), rel=1e-5)
    assert heard["own_audio_lm_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_cli_diagnose_without_heads_reports_cka_only(runs: TinyRuns, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.aura / "final", run / "final")  # a run whose heads.safetensors went missing
    out = tmp_path / "out"
    args = ["diagnose", "--model", str(run), "--data", str(runs.manifest), "--out", str(out), "--limit", "2"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "alignment.json").read_text())
    assert all(set(row) == {"student", "teacher", "cka"} for row in saved["layers"])
    assert "heads.safetensors" in saved["note"] and "probe" not in saved
    assert (out / "alignment.png").is_file()
    # the bridge run is not an AuRA student: a clear refusal
    result = CliRunner().invoke(app, ["diagnose", "--model", str(runs.bridge), *args[3:]])
    assert result.exit_code != 0
    assert "diagnose compares an AuRA student" in str(result.exception)


def test_the_probe_can_run_on_other_clips(runs: TinyRuns, tmp_path: Path) -> None:
    """--probe-data: alignment on the synthetic manifest, the decoder probe on another one, whole."""
    from conftest import make_manifest

    real = make_manifest(tmp_path / "real", count=5, seed=9)
    result = diagnose(runs.aura, runs.manifest, tmp_path / "out", limit=2, probe_data=real, progress=False)
    assert result["clips"] == 2
    probe = result["probe"]
    assert probe["data"] == str(real) and probe["clips"] == 5
    assert {e["id"] for e in probe["examples"]} == {f"clip{i}" for i in range(5)}
    assert probe["student_wer"] >= 0 and probe["teacher_pooled_wer"] >= 0
