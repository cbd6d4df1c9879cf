"""The frozen Whisper teacher: padded-window states cut to the clip, batching and long clips, transcription;
and on the packaged weights, agreement with ctranslate2 and a word error rate on espeak-ng speech."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_convert_ct2 import make_tiny_whisper_folder
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE, encoder_frames, load_audio, log_mel, log_mel_batch
from aura.audio.frames import pool_frames
from aura.cli.app import app, main
from aura.metrics import error_rates
from aura.registry import MODELS
from aura.teacher.whisper import Teacher, load_teacher


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * rng.uniform(100, 300) * t * (1 + 0.1 * np.sin(3 * t)))
    return (0.3 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_hidden_states_are_the_padded_window_cut_to_the_clip(tiny_teacher: Teacher) -> None:
    wave = _clip(1.3, seed=0)
    states = tiny_teacher.hidden_states(wave)
    frames = encoder_frames(len(wave))
    assert len(states) == tiny_teacher.num_layers + 1 == 3
    full = tiny_teacher.encode_mel(log_mel_batch([wave], n_mels=tiny_teacher.n_mels))
    assert all(s.shape == (1, 1500, tiny_teacher.width) for s in full)
    for got, padded in zip(states, full, strict=True):
        assert got.shape == (frames, 64) and got.dtype == torch.float32
        torch.testing.assert_close(got, padded[0, :frames])
    # a torch waveform is accepted as well
    torch.testing.assert_close(tiny_teacher.hidden_states(torch.from_numpy(wave))[-1], states[-1])


def test_batches_and_long_clips(tiny_teacher: Teacher) -> None:
    short, long = _clip(0.7, seed=1), _clip(45.0, seed=2)
    batched = tiny_teacher.hidden_states([short, long], batch_size=3)
    assert len(batched) == 2 and all(len(clip) == 3 for clip in batched)
    for layer, single in zip(batched[0], tiny_teacher.hidden_states(short), strict=True):
        torch.testing.assert_close(layer, single, atol=1e-5, rtol=1e-5)
    # 45 s: two padded 22.5-s windows whose frames add up to the clip's
    assert [s.shape[0] for s in batched[1]] == [encoder_frames(len(long))] * 3 == [2250] * 3
    first = tiny_teacher.hidden_states(long[: 22 * SAMPLE_RATE + SAMPLE_RATE // 2])
    second = tiny_teacher.hidden_states(long[22 * SAMPLE_RATE + SAMPLE_RATE // 2 :])
    for layer, a, b in zip(batched[1], first, second, strict=True):
        torch.testing.assert_close(layer, torch.cat([a, b]), atol=1e-5, rtol=1e-5)


def test_teacher_is_frozen_and_targets_work_in_autograd(tiny_teacher: Teacher) -> None:
    assert not tiny_teacher.model.training
    assert not any(p.requires_grad for p in tiny_teacher.model.parameters())
    target = tiny_teacher.hidden_states(_clip(0.5, seed=3))[-1]
    student = torch.zeros_like(target, requires_grad=True)
    torch.nn.functional.cosine_similarity(student + 1e-3, target, dim=-1).mean().backward()
    assert student.grad is not None


def test_bad_inputs_are_explained(tiny_teacher: Teacher) -> None:
    with pytest.raises(ValueError, match=r"expected log-mel of shape \(batch, 80, 3000\)"):
        tiny_teacher.encode_mel(torch.zeros(1, 80, 100))
    with pytest.raises(ValueError, match="empty"):
        tiny_teacher.hidden_states(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="no tokenizer"):
        tiny_teacher.transcribe(_clip(0.5, seed=4))


def test_transcribe_a_folder_teacher_single_and_batched(tmp_path: Path) -> None:
    make_tiny_whisper_folder(tmp_path / "whisper")
    teacher = load_teacher(tmp_path / "whisper")
    assert teacher.name == "whisper" and teacher.is_english_only and teacher.num_layers == 2
    waves = [_clip(1.0, seed=5), _clip(31.0, seed=6)]
    texts = teacher.transcribe(waves, max_new_tokens=5)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert teacher.transcribe(waves[0], max_new_tokens=5) == texts[0]
    # the decoder probe path: decoding the encoder's final states gives the same text as the mel
    mel = log_mel_batch(waves[:1])
    states = teacher.encode_mel(mel)[-1]
    assert teacher.decode(encoder_states=states, max_new_tokens=5) == teacher.decode(mel, max_new_tokens=5)
    assert teacher.decode(mel, beam_size=2, max_new_tokens=5)[0] == teacher.transcribe(
        waves[0], beam_size=2, max_new_tokens=5
    )
    with pytest.raises(ValueError, match="exactly one of mel and encoder_states"):
        teacher.decode(mel, encoder_states=states)
    with pytest.raises(ValueError, match="beam_size"):
        teacher.transcribe(waves[0], beam_size=0)


def test_cli_rejects_unreadable_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    monkeypatch.setattr(sys, "argv", ["aura", "transcribe", "--teacher", "whisper-tiny.en", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "notes.wav: not a readable audio file" in err and "Traceback" not in err


def test_cli_refuses_truncated_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The first 3,000 bytes of a 2-s clip: refused with both durations instead of transcribed."""
    whole = tmp_path / "whole.wav"
    sf.write(whole, _clip(2.0, seed=1), SAMPLE_RATE)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:3000])
    monkeypatch.setattr(sys, "argv", ["aura", "transcribe", "--teacher", "whisper-tiny.en", str(cut)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "cut.wav: the file is truncated: its header declares 2.000 s of audio but it holds only 0.092 s"
        in err
    )


def test_silent_or_near_empty_audio_transcribes_to_nothing(tmp_path: Path) -> None:
    """Whisper answers silence and a 0.09-s blip with a stock phrase; such windows are not decoded."""
    make_tiny_whisper_folder(tmp_path / "whisper")
    teacher = load_teacher(tmp_path / "whisper")
    waves = [np.zeros(SAMPLE_RATE, dtype=np.float32), _clip(0.09, seed=2), _clip(1.0, seed=3)]
    texts = teacher.transcribe(waves, max_new_tokens=3)
    assert texts[:2] == ["", ""] and texts[2] == teacher.transcribe(waves[2], max_new_tokens=3) != ""


def _speak(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    return load_audio(path)


def _require(name: str) -> None:
    if not MODELS[name].installed:
        pytest.skip(f"{name} is not installed (aura models --install {name})")


@pytest.mark.real
def test_real_tiny_en_states_match_ctranslate2_and_cli(tmp_path: Path) -> None:
    import ctranslate2

    _require("whisper-tiny.en")
    start = time.perf_counter()
    teacher = load_teacher("whisper-tiny.en")
    print(f"tiny.en load: {time.perf_counter() - start:.2f} s")
    assert (teacher.num_layers, teacher.width, teacher.n_mels, teacher.is_english_only) == (4, 384, 80, True)
    wave = _speak("The quick brown fox jumps over the lazy dog.", tmp_path / "fox.wav")
    start = time.perf_counter()
    states = teacher.hidden_states(wave)
    print(
        f"tiny.en hidden_states ({len(wave) / SAMPLE_RATE:.1f} s clip): {time.perf_counter() - start:.2f} s"
    )
    frames = encoder_frames(len(wave))
    assert [s.shape for s in states] == [(frames, 384)] * 5

    oracle = ctranslate2.models.Whisper(
        str(MODELS["whisper-tiny.en"].source_dir), device="cpu", compute_type="float32"
    )
    mel = log_mel(wave)[None].numpy()
    theirs = np.asarray(oracle.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))[0, :frames]
    assert np.abs(states[-1].numpy() - theirs).max() < 2e-3

    result = CliRunner().invoke(
        app, ["transcribe", "--teacher", "whisper-tiny.en", str(tmp_path / "fox.wav"), "--json"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip())
    assert line["file"] == str(tmp_path / "fox.wav")
    assert line["text"] == teacher.transcribe(wave)
    assert "quick brown fox" in line["text"].lower()

    # the transcript loss (distill.decoder_weight): the decoder reading the clip's last states finds its
    # own words far likelier than other words, and the gradient reaches the states
    last = states[-1].clone().requires_grad_(True)
    right = teacher.transcript_loss(last, "the quick brown fox jumps over the lazy dog")
    wrong = teacher.transcript_loss(last.detach(), "a small boat drifted slowly across the lake")
    assert right + 3 < wrong
    right.backward()
    assert last.grad is not None and last.grad.abs().sum() > 0

    # the probe and the transcript loss read one state per k-pooled token: the same loss as those states
    # repeated k times back to 50 Hz, since attention over k copies of a key is attention over the key
    whole = last.detach()[: len(last) // 4 * 4]
    tokens = pool_frames(whole, 4)
    at_token_rate = teacher.transcript_loss(tokens, "the quick brown fox jumps over the lazy dog")
    at_50_hz = teacher.transcript_loss(
        tokens.repeat_interleave(4, 0), "the quick brown fox jumps over the lazy dog"
    )
    assert at_token_rate.item() == pytest.approx(at_50_hz.item(), abs=1e-4)


HELD_OUT = [
    "The museum opens at nine in the morning and closes late on Fridays.",
    "Please remember to water the plants while I am away next week.",
    "A small boat drifted slowly across the quiet lake at sunset.",
    "Our train was delayed because of heavy snow on the northern line.",
    "She bought three apples, a loaf of bread and some fresh milk.",
]


@pytest.mark.real
def test_real_whisper_base_transcribes_espeak_speech(tmp_path: Path) -> None:
    _require("whisper-base")
    waves = [_speak(text, tmp_path / f"s{i}.wav") for i, text in enumerate(HELD_OUT)]
    teacher = load_teacher("whisper-base")
    assert not teacher.is_english_only and teacher.width == 512
    start = time.perf_counter()
    # greedy base scores ~15 % on these; beam search is Whisper's recommended decoding
    texts = teacher.transcribe(waves, beam_size=5)
    wer = error_rates(HELD_OUT, texts).wer
    print(f"whisper-base beam 5: {len(waves)} clips in {time.perf_counter() - start:.1f} s, WER {wer:.1%}")
    assert wer <= 0.15, texts

    # the transcript loss teacher-forces the prefix greedy decoding starts from (a multilingual model's
    # language and task tokens): the decoder reading a clip finds its own words far likelier than others
    prefix = teacher.tokenizer.convert_ids_to_tokens(teacher.tokenizer(" hello")["input_ids"][:4])
    assert prefix == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    last = teacher.hidden_states(waves[0])[-1]
    right = teacher.transcript_loss(last, HELD_OUT[0])
    assert right + 3 < teacher.transcript_loss(last, HELD_OUT[2])
