"""How close must the student's states be for Whisper's decoder to read them?

Calibrates `aura diagnose`'s decoder probe: the teacher's own pooled last-layer states on real clips are
corrupted with Gaussian noise in per-dimension standardised space (the space the distillation loss works
in), and the teacher's decoder reads them as it reads the student's. Prints, and writes as JSON, the
centred cosine each noise level leaves and the WER it costs. Isotropic noise is only a stand-in for the
student's (structured) error, so read the result as an order of magnitude.

    .venv/bin/python scripts/probe_sensitivity.py --data runs/shipped/data/test-asr/manifest.jsonl \
        --out runs/probe_sensitivity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from aura.cli import quiet_libraries
from aura.data.manifest import read_manifest
from aura.probe import Clip as ProbeClip
from aura.probe import probe_decode, teacher_states
from aura.features import load_audio
from aura.metrics import error_rates
from aura.teacher import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="asr manifest (clips with transcripts)")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--teacher", default="whisper-tiny.en")
    parser.add_argument("--k", type=int, default=4, help="pooling, as the student's embedding stacks")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--noise", default="0,0.25,0.5,0.75,1.0,1.5", help="noise std, standardised units")
    args = parser.parse_args()
    quiet_libraries()

    examples = [ex for ex in read_manifest(args.data) if ex.task == "asr"][: args.limit]
    clips = [
        ProbeClip(
            ex.id, ex.prompt, ex.response, ex.transcript or ex.response, load_audio(ex.audio, name=ex.id)
        )
        for ex in examples
    ]
    teacher = load_teacher(args.teacher)
    last = teacher.num_layers
    pooled = teacher_states(teacher, clips, [last], args.k)[last]
    every = torch.cat(pooled)
    mean, std = every.mean(0), every.std(0).clamp(min=1e-6)
    refs = [c.reference or "" for c in clips]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for sigma in [float(s) for s in args.noise.split(",")]:
        hypotheses, cosines = [], []
        for clip, states in zip(clips, pooled, strict=True):
            noisy = states + sigma * std * torch.randn(states.shape, generator=generator)
            cosines.append(F.cosine_similarity(noisy - mean, states - mean, dim=-1))
            hypotheses.append(probe_decode(teacher, noisy, args.k, clip))
        row = {
            "noise_std": sigma,
            "centred_cosine": float(torch.cat(cosines).mean()),
            "wer": error_rates(refs, hypotheses).wer,
            "example": hypotheses[0],
        }
        rows.append(row)
        print(
            f"noise {sigma:.2f}: centred cosine {row['centred_cosine']:.3f}, WER {row['wer']:.1%}  ({row['example']!r})"
        )
    result = {"teacher": teacher.name, "layer": last, "k": args.k, "clips": len(clips), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as err:  # a missing/broken manifest or audio file: one line, no traceback
        raise SystemExit(f"probe_sensitivity: {err}") from None
