"""Greedy CTC read-out: what the LLM's own vocabulary says at a student's audio positions.

For a run trained with the token CTC loss (`distill.ctc_weight`): the audio states after the last LoRA
block go through the LLM's final norm and LM head, the arg-max token of each audio position is taken,
repeats are merged and blanks dropped (the loss's own rules), and the result is scored against each
clip's transcript. It shows whether the audio positions already spell words the rest of the LLM reads.

    .venv/bin/python scripts/ctc_readout.py --model runs/shipped/ctc1 \
        --data runs/shipped/data/test-asr/manifest.jsonl --out runs/shipped/ctc1-readout.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from aura.cli import quiet_libraries
from aura.data.manifest import read_manifest
from aura.distill import ctc_blank
from aura.features import load_audio
from aura.infer import run_folders
from aura.metrics import error_rates
from aura.student import AuraStudent


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="RUN_DIR, RUN_DIR/final or a shipped name")
    parser.add_argument("--data", required=True, help="asr manifest (clips with transcripts)")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    quiet_libraries()
    student = AuraStudent.from_pretrained(run_folders(args.model)[0])
    blank, n = ctc_blank(student.tokenizer), student.num_blocks
    examples = [ex for ex in read_manifest(args.data) if ex.transcript][: args.limit]
    if not examples:
        raise SystemExit(f"{args.data}: no example has a transcript to score the read-out against.")
    readouts = []
    for ex in examples:
        mel = student.audio_features(load_audio(ex.audio, name=ex.id))
        batch = student.build_batch([student.render_prompt(ex.prompt)], [[mel]], stop_after_audio=True)
        states = student.hidden_states(batch, [n], blocks=n)[n][batch.audio_mask]
        best = student.vocabulary_logits(states).argmax(-1).tolist()
        tokens = [token for token, _ in itertools.groupby(best) if token != blank]
        readouts.append(student.tokenizer.decode(tokens).strip())
    rates = error_rates([ex.transcript for ex in examples], readouts)
    result = {
        "model": args.model,
        "clips": len(examples),
        "wer": rates.wer,
        "cer": rates.cer,
        "deletions": rates.deletions,
        "substitutions": rates.substitutions,
        "insertions": rates.insertions,
        "examples": [
            {"id": ex.id, "reference": ex.transcript, "readout": r}
            for ex, r in zip(examples, readouts, strict=True)
        ],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(examples)} clips: CTC read-out WER {rates.wer:.1%}, CER {rates.cer:.1%} -> {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (
        OSError,
        ValueError,
    ) as err:  # a missing checkpoint, manifest or audio file: one line, no traceback
        raise SystemExit(f"ctc_readout: {err}") from None
