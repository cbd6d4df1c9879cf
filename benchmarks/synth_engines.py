"""Each synthesis engine: CPU-seconds per clip, and how well Whisper tiny.en and base hear its clips.

Per engine, 100 `asr` clips of the test sentences with the engine's training voices, clean and
augmented. CPU time is the marginal cost per clip (100 clips minus 5 clips, in fresh processes with
one worker and one thread, children included), so loading a voice or starting Python is not counted.
Also Whisper tiny.en on the Asterisk prompts (real recorded speech), the number to set beside these.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from aura.data.engines import ENGINES
from aura.data.importers import ASTERISK_AUDIO, import_asterisk
from aura.data.manifest import read_manifest
from aura.features import load_audio
from aura.metrics import error_rates
from benchmarks.common import write_result

N, FEW = 100, 5
TEACHERS = ("whisper-tiny.en", "whisper-base")


def _synth_cpu(out: Path, engine: str, n: int, augment: bool) -> float:
    """CPU-seconds (user + system, children included) of one `aura data synth` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    flags = ["--augment" if augment else "--no-augment", "--voice-set", "train", "--workers", "1"]
    subprocess.run(
        [sys.executable, "-m", "aura.cli", "data", "synth", "--task", "asr", "--n", str(n), "--out", str(out)]
        + ["--split", "test", "--seed", "5", "--engines", engine, *flags],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _wer(teacher, manifest: Path) -> float:  # noqa: ANN001 - aura.teacher.Teacher
    examples = read_manifest(manifest, max_seconds=float("inf"))
    heard = teacher.transcribe([load_audio(ex.audio) for ex in examples], batch_size=8)
    return round(error_rates([ex.transcript or "" for ex in examples], heard).wer, 4)


def run() -> dict:
    from aura.teacher import load_teacher

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="aura-bench-synth-") as tmp:
        root = Path(tmp)
        for name in ENGINES:
            clean = _synth_cpu(root / name / "clean", name, N, augment=False)
            few = _synth_cpu(root / name / "few", name, FEW, augment=False)
            augmented = _synth_cpu(root / name / "augmented", name, N, augment=True)
            seconds = sum(ex.duration for ex in read_manifest(root / name / "clean" / "manifest.jsonl"))
            rows[name] = {
                "cpu_s_per_clip": round((clean - few) / (N - FEW), 4),
                "augment_cpu_s_per_clip": round((augmented - clean) / N, 4),
                "audio_s_per_clip": round(seconds / N, 3),
                "voices": list(ENGINES[name].voices["train"]),
            }
        for teacher_name in TEACHERS:
            teacher = load_teacher(teacher_name)
            for name in ENGINES:
                rows[name][f"wer_{teacher_name}"] = _wer(teacher, root / name / "clean" / "manifest.jsonl")
                if teacher_name == TEACHERS[0]:
                    rows[name][f"wer_{teacher_name}_augmented"] = _wer(
                        teacher, root / name / "augmented" / "manifest.jsonl"
                    )
            print(teacher_name, {k: v.get(f"wer_{teacher_name}") for k, v in rows.items()})
        real = {}
        if ASTERISK_AUDIO.is_dir():
            halves = import_asterisk(root / "asterisk", progress=False)
            teacher = load_teacher(TEACHERS[0])
            for half, (path, count, _) in halves.items():
                real[half] = {"clips": count, f"wer_{TEACHERS[0]}": _wer(teacher, path)}
    result = {"clips_per_engine": N, "engines": rows, "asterisk": real}
    write_result("synth_engines", result)
    return result


if __name__ == "__main__":
    run()
