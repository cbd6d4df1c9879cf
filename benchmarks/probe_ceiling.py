"""The decoder probe's ceiling at each token rate: Whisper's decoder reading the teacher's own last-layer
states through the probe's path (cut to the clip's frames, mean-pooled by k, one state per token).

The student is scored against "teacher, same input" at its own k; this shows what the rate itself costs
on real recorded speech, beside the teacher's ordinary transcription (the full padded 30-s window).
Clips: every fourth prompt of the Asterisk dev half (`aura data import --from asterisk`), the set the
training probe uses. `python -m benchmarks.probe_ceiling [--work DIR] [--teacher NAME]` writes
`results/probe_ceiling.json` (Whisper tiny.en, the default teacher) or `results/probe_ceiling-NAME.json`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from aura.audio.frames import pool_frames
from aura.data.importers import import_asterisk
from aura.distill.probe import load_clips, probe_decode
from aura.metrics import error_rates
from aura.registry import ModelNotFoundError
from benchmarks.common import write_result

RATES = (1, 2, 4)
EVERY = 4
DEFAULT_TEACHER = "whisper-tiny.en"


def run(work: Path | None = None, teacher_name: str = DEFAULT_TEACHER) -> dict:
    from aura.teacher.whisper import load_teacher

    with tempfile.TemporaryDirectory(prefix="aura-bench-probe-") as tmp:
        root = Path(work or tmp)
        manifest = root / "asterisk" / "dev" / "manifest.jsonl"
        if not manifest.is_file():
            import_asterisk(root / "asterisk", progress=False)
        clips = [c for c in load_clips(manifest) if c.reference][::EVERY]
        teacher = load_teacher(teacher_name)
        references = [c.reference or "" for c in clips]
        name = "probe_ceiling" if teacher_name == DEFAULT_TEACHER else f"probe_ceiling-{teacher_name}"
        result: dict = {"teacher": teacher.name, "clips": len(clips), "wer_by_k": {}}
        result["wer_full_window"] = round(
            error_rates(references, teacher.transcribe([c.wave for c in clips])).wer, 4
        )
        last = [states[teacher.num_layers] for states in teacher.hidden_states([c.wave for c in clips])]
        for k in RATES:
            heard = [probe_decode(teacher, pool_frames(s, k), c) for s, c in zip(last, clips, strict=True)]
            result["wer_by_k"][str(k)] = round(error_rates(references, heard).wer, 4)
            print(f"k={k}: {result['wer_by_k'][str(k)]:.1%}", flush=True)
            write_result(name, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, help="keep the imported Asterisk prompts here and reuse them")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="the Whisper teacher whose decoder reads")
    args = parser.parse_args()
    try:
        run(args.work, args.teacher)
    except ModelNotFoundError as error:
        parser.error(str(error))
