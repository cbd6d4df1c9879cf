"""Each synthesis engine: CPU-seconds per clip, and how well Whisper tiny.en and base hear its clips.

CPU time is the marginal cost per clip: `aura data synth` of 25 clips minus 5 clips, in fresh processes
with one worker and one thread, children included, so loading a voice or starting Python is not counted.
WER: 100 clean `asr` clips per engine (test sentences, the engine's training voices), greedy Whisper
tiny.en and base; and Whisper tiny.en on the Asterisk prompts (real recorded speech) beside them.
Results are written after every stage. `python -m benchmarks.synth_engines [--work DIR] [--engines a,b]`
keeps the clips in DIR and reuses the ones already there; `--engines` measures only those engines and keeps
the other engines' rows of the last result, so adding an engine does not re-time the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from aura.audio.features import load_audio
from aura.data.engines import ENGINES
from aura.data.importers import ASTERISK_AUDIO, import_asterisk
from aura.data.manifest import read_manifest
from aura.metrics import error_rates
from benchmarks.common import RESULTS, write_result

N_CPU, FEW, N_WER = 25, 5, 100
TEACHERS = ("whisper-tiny.en", "whisper-base")


def _synth(out: Path, engine: str, n: int, augment: bool = False) -> float:
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


def _wer(teacher, manifest: Path) -> float:  # noqa: ANN001 - aura.teacher.whisper.Teacher
    examples = read_manifest(manifest, max_seconds=float("inf"))
    heard = teacher.transcribe([load_audio(ex.audio) for ex in examples], batch_size=8)
    return round(error_rates([ex.transcript or "" for ex in examples], heard).wer, 4)


def run(work: Path | None = None, engines: list[str] | None = None) -> dict:
    from aura.teacher.whisper import load_teacher

    engines = engines or list(ENGINES)
    if unknown := [e for e in engines if e not in ENGINES]:
        raise SystemExit(f"unknown engine(s) {', '.join(unknown)}; use any of {', '.join(ENGINES)}")
    with tempfile.TemporaryDirectory(prefix="aura-bench-synth-") as tmp:
        root = Path(work or tmp)
        last = RESULTS / "synth_engines.json"
        kept = json.loads(last.read_text())["engines"] if engines != list(ENGINES) and last.is_file() else {}
        rows: dict[str, dict] = {n: r for n, r in kept.items() if n in ENGINES and n not in engines}
        rows |= {name: {"voices": list(ENGINES[name].voices["train"])} for name in engines}
        result = {"cpu_clips": [FEW, N_CPU], "wer_clips_per_engine": N_WER, "engines": rows, "asterisk": {}}
        for name in engines:
            many = _synth(root / "cpu" / name / "many", name, N_CPU)
            few = _synth(root / "cpu" / name / "few", name, FEW)
            rows[name]["cpu_s_per_clip"] = round((many - few) / (N_CPU - FEW), 4)
            aug = _synth(root / "cpu" / name / "augmented", name, N_CPU, augment=True)
            rows[name]["augment_cpu_s_per_clip"] = round((aug - many) / N_CPU, 4)
            seconds = sum(
                ex.duration for ex in read_manifest(root / "cpu" / name / "many" / "manifest.jsonl")
            )
            rows[name]["audio_s_per_clip"] = round(seconds / N_CPU, 3)
        write_result("synth_engines", result)
        for name in engines:
            if not (root / name / "manifest.jsonl").is_file():
                _synth(root / name, name, N_WER)
        for teacher_name in TEACHERS:
            teacher = load_teacher(teacher_name)
            for name in engines:
                rows[name][f"wer_{teacher_name}"] = _wer(teacher, root / name / "manifest.jsonl")
            write_result("synth_engines", result)
            if teacher_name == TEACHERS[0] and ASTERISK_AUDIO.is_dir():
                halves = import_asterisk(root / "asterisk", progress=False)
                for half, (path, count, _) in halves.items():
                    result["asterisk"][half] = {"clips": count, f"wer_{teacher_name}": _wer(teacher, path)}
                write_result("synth_engines", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, help="keep the clips here and reuse the ones already there")
    parser.add_argument("--engines", help="comma-separated engines to measure (default: all)")
    args = parser.parse_args()
    run(args.work, args.engines.split(",") if args.engines else None)
