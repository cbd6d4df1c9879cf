"""Checkpoints and clips the speed benchmarks run on.

Speed does not depend on what the weights learned, only on the model sizes, so a benchmark uses the
demo's trained checkpoints when they exist and otherwise trains one step of each architecture (through
`aura train`'s own code path) on a few synthesized clips.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aura.audio.features import load_audio
from aura.config import load_config
from aura.data.synth import synthesize
from aura.train.trainer import train

WORK = Path(__file__).parent / "work"
DEMO = Path(os.environ.get("AURA_DEMO_DIR", "aura-demo"))  # where `aura demo` left its runs


def clips(seconds: float, folder: Path = WORK / "speech") -> np.ndarray:
    """Real synthesized speech (not noise: transcription time depends on the words) of `seconds` length."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        synthesize("asr", 24, folder, split="test", seed=7, progress=False)
    waves = [load_audio(path) for path in sorted((folder / "audio").glob("*.wav"))]
    speech = np.concatenate(waves)
    while speech.size < seconds * 16_000:
        speech = np.concatenate([speech, speech])
    return speech[: int(seconds * 16_000)]


def checkpoint(arch: str, given: str | None = None) -> Path:
    """`given`, else the demo's run for `arch`, else a one-step run of `arch` trained here."""
    if given:
        return Path(given)
    demo_run = DEMO / ("joint" if arch == "aura" else "bridge") / "final"
    if demo_run.is_dir():
        return demo_run
    run = WORK / f"{arch}-1step"
    if not (run / "final").is_dir():
        data = WORK / "train-speech"
        if not (data / "manifest.jsonl").is_file():
            synthesize("asr", 8, data, split="train", seed=0, progress=False)
        overrides = [f"data.train={data / 'manifest.jsonl'}", "train.max_steps=1", "train.batch_size=2"]
        overrides += ["model.arch=bridge", "train.stage=joint"] if arch == "bridge" else []
        train(load_config(None, overrides), run, progress=False)
    return run / "final"


def compare_main(
    doc: str,
    run: Callable[[int, str | None, str | None], dict],
    repeats: int,
    default: str = "the demo's, else a one-step run",
) -> None:
    """Command line of the benchmarks that compare AuRA with the bridge and the cascade."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--model", help=f"AuRA checkpoint (default: {default})")
    parser.add_argument("--bridge-model", help=f"bridge checkpoint (default: {default})")
    args = parser.parse_args()
    run(args.repeats, args.model, args.bridge_model)
