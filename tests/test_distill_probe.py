"""The decoder probe as a training metric (`data.probe`) and its tracker."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llm, build_tiny_tokenizer, make_manifest
from tiny_runs import tiny_runs

from aura.config import ConfigError, load_config
from aura.distill.heads import DistillHeads
from aura.distill.probe import Clip, ProbeTracker, decoder_probe, teacher_states
from aura.teacher.whisper import load_teacher
from aura.train.trainer import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    return tiny_runs(tmp_path_factory)


def _train(runs, run_dir: Path, *extra: str) -> list[dict[str, str]]:
    config = load_config(
        None,
        [
            f"data.train={runs.manifest}",
            f"distill.cache_dir={runs.root / 'teacher_cache'}",
            "model.lora_layers=2",
            "model.lora_rank=4",
            "model.lora_alpha=4",
            "train.batch_size=2",
            "train.warmup_steps=0",
            "train.log_every=1",
            *extra,
        ],
    )
    tokenizer = build_tiny_tokenizer()
    torch.set_num_threads(1)
    train(
        config,
        run_dir,
        teacher=load_teacher(str(runs.whisper)),
        llm=build_tiny_llm(tokenizer),
        tokenizer=tokenizer,
        progress=False,
    )
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_training_logs_the_probe_wer_and_loss_at_every_dev_evaluation(runs, tmp_path: Path) -> None:
    probe = make_manifest(tmp_path / "probe", count=3, seed=5)
    rows = _train(runs, tmp_path / "run", "train.max_steps=2", "train.dev_every=1", f"data.probe={probe}")
    probed = [r for r in rows if r.get("dev_probe_wer")]
    assert [r["step"] for r in probed] == ["0", "1", "2"]
    assert all(float(r["dev_probe_wer"]) >= 0 and float(r["dev_probe_loss"]) > 0 for r in probed)
    # the student moves, so its loss of the references does too
    assert len({r["dev_probe_loss"] for r in probed}) > 1
    # the teacher's same-input WER and loss are computed once: one value each, logged beside every point
    assert len({r["dev_probe_teacher_wer"] for r in probed}) == 1
    assert len({r["dev_probe_teacher_loss"] for r in probed}) == 1


def test_the_tracker_agrees_with_diagnose_probe(runs) -> None:
    """Training's probe and `aura diagnose`'s are the same measurement on the same states."""
    from aura.eval.diagnose import student_states
    from aura.infer.aura_model import AuraModel

    teacher = load_teacher(str(runs.whisper))
    heads = DistillHeads.load(runs.aura / "heads.safetensors")
    student = AuraModel.from_pretrained(runs.aura, merge=False).student
    config = load_config(runs.aura / "config.yaml")
    from aura.audio.features import load_audio
    from aura.data.manifest import read_manifest

    clips = [
        Clip(e.id, e.prompt, e.response, e.transcript, load_audio(e.audio))
        for e in read_manifest(runs.manifest)
    ]
    tracker = ProbeTracker(teacher, heads, clips, config.model.k)
    last = teacher.num_layers
    index = [t for _, t in heads.pairs].index(last)
    layer = heads.pairs[index][0]
    full = decoder_probe(
        teacher,
        heads,
        index,
        clips,
        student_states(student, clips, [layer], config)[layer],
        teacher_states(teacher, clips, [last], config.model.k)[last],
    )
    measured = tracker.measure(student, config)
    assert measured["wer"] == pytest.approx(full["student_wer"])
    assert measured["loss"] == pytest.approx(full["student_loss"], rel=1e-5)
    assert tracker.teacher_wer == pytest.approx(full["teacher_pooled_wer"])
    assert tracker.teacher_loss == pytest.approx(full["teacher_pooled_loss"], rel=1e-5)


def test_a_probe_manifest_without_transcripts_is_a_clear_error(runs, tmp_path: Path) -> None:
    from aura.data.manifest import read_manifest, write_manifest

    examples = [
        e.model_copy(update={"transcript": None, "task": "instruct"}) for e in read_manifest(runs.manifest)
    ]
    path = write_manifest(examples, tmp_path / "untranscribed.jsonl")
    with pytest.raises(ConfigError, match="no example has a transcript"):
        _train(runs, tmp_path / "run", "train.max_steps=1", "train.dev_every=1", f"data.probe={path}")


def test_load_clips_leaves_out_clips_over_one_window(tmp_path: Path) -> None:
    """Real prompt sets hold the odd clip over 30 s: the probe reads one Whisper window, so it is left out."""
    import soundfile as sf
    from conftest import tone_clip

    from aura.audio.features import SAMPLE_RATE
    from aura.data.manifest import Example, write_manifest
    from aura.distill.probe import load_clips

    examples = []
    for name, seconds in (("short", 2.0), ("long", 31.0)):
        sf.write(tmp_path / f"{name}.wav", tone_clip(seconds, 1), SAMPLE_RATE)
        examples.append(
            Example(id=name, audio=f"{name}.wav", task="asr", prompt="", response="a cat", duration=seconds)
        )
    clips = load_clips(write_manifest(examples, tmp_path / "m.jsonl"))
    assert [c.id for c in clips] == ["short"] and clips[0].reference == "a cat"
