"""Real check of synthetic speech: the packaged Whisper base must understand the held-out test clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura.audio.features import load_audio
from aura.data.manifest import scan_manifest
from aura.data.synth import synthesize
from aura.metrics import error_rates

N_PER_TASK = 6


@pytest.mark.real
def test_whisper_base_transcribes_synthetic_test_split(tmp_path: Path) -> None:
    from aura.teacher.whisper import load_teacher

    examples = []
    for task in ("asr", "spoken-qa", "context-qa"):
        manifest = synthesize(task, N_PER_TASK, tmp_path / task, split="test", seed=7, progress=False)
        good, problems = scan_manifest(manifest)
        assert not problems and len(good) == N_PER_TASK
        examples += good
    teacher = load_teacher("whisper-base")
    hypotheses = teacher.transcribe([load_audio(ex.audio) for ex in examples], beam_size=5)
    rates = error_rates([ex.transcript or "" for ex in examples], hypotheses)
    assert rates.wer <= 0.20, (rates, list(zip([ex.transcript for ex in examples], hypotheses, strict=True)))
