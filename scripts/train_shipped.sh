#!/usr/bin/env bash
# Reproduce the shipped checkpoint's training (issue 8): data, distillation stage, joint stage.
# Safe to rerun after an interruption: finished data is kept and each stage continues with --resume.
#   nohup bash scripts/train_shipped.sh runs/shipped > runs/shipped.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/shipped}
RECIPE=aura/recipes/aura-smollm2-135m.yaml
A=.venv/bin/aura
mkdir -p "$OUT/data"
synth() {  # task n split
    [ -f "$OUT/data/$3-$1/manifest.jsonl" ] || $A data synth --task "$1" --n "$2" --split "$3" --out "$OUT/data/$3-$1" --seed 11
}
synth asr 2000 train; synth instruct 1500 train; synth spoken-qa 800 train; synth context-qa 800 train
synth asr 60 dev; synth asr 100 test; synth context-qa 100 test; synth spoken-qa 100 test
.venv/bin/python - "$OUT/data" <<'PY'
import sys
from pathlib import Path
from aura.data.manifest import read_manifest, write_manifest
root = Path(sys.argv[1])
parts = sorted(root.glob("train-*/manifest.jsonl"))
write_manifest([ex for part in parts for ex in read_manifest(part)], root / "train.jsonl")
PY
stage() {  # name steps extra-overrides...
    local run="$OUT/$1" steps=$2; shift 2
    if [ -f "$run/final/aura_config.yaml" ]; then return; fi
    if [ -d "$run/checkpoints" ]; then
        $A train --out "$run" --resume "train.max_steps=$steps" "$@"
    else
        $A train --config $RECIPE --out "$run" "data.train=$OUT/data/train.jsonl" \
            "data.dev=$OUT/data/dev-asr/manifest.jsonl" "train.max_steps=$steps" "$@"
    fi
}
stage distill 6000 train.stage=distill
stage joint 3000 train.stage=joint "train.init_from=$OUT/distill"
