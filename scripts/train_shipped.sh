#!/usr/bin/env bash
# Reproduce the shipped checkpoints `aura-smollm2-135m` and `aura-smollm2-135m-bridge` from the release
# recipe aura/recipes/shipped.yaml: its data, every training stage (AuRA's distillation and three joint
# stages, the no-distillation ablation and the bridge with the same joint stages), the one `aura eval`
# run and `aura diagnose` of the model cards (docs/models/), then the shipped folders.
# Safe to rerun after an interruption: finished data is kept, each run continues with --resume (and a
# paused run with a raised MORE_STEPS), runs finished at their requested length and reports are skipped.
#   nohup bash scripts/train_shipped.sh runs/shipped > runs/shipped.log 2>&1 &
# ONLY="bridge bridge8k bridgedeep" trains just those runs (after the data) and stops before eval and ship.
# JOINT_STEPS, MORE_STEPS, SCHEDULE_STEPS and DEEP_STEPS replace the recipe's step counts (a MORE_STEPS
# below SCHEDULE_STEPS pauses the second joint stage part-way along its schedule; rerun with a larger
# one to continue it). About 18 h on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/shipped}
A=.venv/bin/aura
DATA=$OUT/data
ONLY=${ONLY:-}  # run names to train, space-separated; empty: all of them, then eval, diagnose and ship
STEPS=()
for pair in joint:JOINT_STEPS more:MORE_STEPS schedule:SCHEDULE_STEPS deep:DEEP_STEPS; do
    var=${pair#*:}
    if [ -n "${!var:-}" ]; then STEPS+=("${pair%%:*}=${!var}"); fi
done
release() {  # part [options]: one recipe part, one tab-separated line per entry
    .venv/bin/python -m aura.release "$1" --out "$OUT" --steps "${STEPS[@]}" "${@:2}"
}
rows() {  # name part [options]: the part's lines into the array `name`
    local text
    text=$(release "${@:2}")  # a failure (a misspelt ONLY name, a bad recipe) stops the script here
    mapfile -t "$1" <<<"$text"
}
rows STAGES stages --only "$ONLY"
CONFIG=$(release config)  # every stage's base training config
rows SYNTH synth
mkdir -p "$DATA"
for line in "${SYNTH[@]}"; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r -a f <<<"$line"
    [ -f "$DATA/${f[0]}/manifest.jsonl" ] || $A data synth --out "$DATA/${f[0]}" "${f[@]:1}"
done
release manifests
run() {  # name overrides...
    local dir="$OUT/$1"; shift
    local want have
    want=$(printf '%s\n' "$@" | sed -n 's/^train\.max_steps=//p' | tail -n 1)
    have=$(sed -n 's/^  max_steps: //p' "$dir/config.yaml" 2>/dev/null || true)
    # finished at the requested length: skip; a raised MORE_STEPS continues a paused run instead
    if [ -f "$dir/final/aura_config.yaml" ] && [ "$want" = "$have" ]; then return; fi
    if [ -d "$dir/checkpoints" ]; then
        $A train --out "$dir" --resume "$@"
    else
        $A train --config "$CONFIG" --out "$dir" "$@"
    fi
}
for line in "${STAGES[@]}"; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r -a f <<<"$line"
    run "${f[@]}"
done
if [ -n "$ONLY" ]; then exit 0; fi
rows COMMANDS commands
for line in "${COMMANDS[@]}"; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r -a f <<<"$line"
    case ${f[0]} in  # each command's report, when present, means it already ran
        eval) report=$OUT/eval/report.json ;;
        diagnose) report=$OUT/diagnose/alignment.json ;;
        *) report= ;;
    esac
    [ -n "$report" ] && [ -f "$report" ] || $A "${f[@]}"
done
ship() {  # run name: the inference files, plus the heads, training config and metrics for `aura diagnose`
    local dest=aura/checkpoints/$2
    rm -rf "$dest" && mkdir -p "$dest"
    cp "$OUT/$1"/final/{aura_config.yaml,adapter_config.json} "$OUT/$1"/{config.yaml,metrics.csv} "$dest"/
    if [ -f "$OUT/$1/heads.safetensors" ]; then cp "$OUT/$1/heads.safetensors" "$dest"/; fi
    # the inference weights in float16: half the size, the same greedy output on the 60 dev clips
    .venv/bin/python - "$OUT/$1/final" "$dest" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file
for name in ("adapter_model.safetensors", "audio_embedding.safetensors"):
    weights = load_file(Path(sys.argv[1]) / name)
    save_file({k: v.half() for k, v in weights.items()}, Path(sys.argv[2]) / name, metadata={"format": "pt"})
PY
}
rows SHIPS ship
for line in "${SHIPS[@]}"; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r -a f <<<"$line"
    ship "${f[@]}"
done
