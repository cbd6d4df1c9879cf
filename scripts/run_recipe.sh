#!/usr/bin/env bash
# Run a recipe (aura/recipes/*.yaml) end to end: its data (synthesised and imported), every training
# stage, its evaluation commands, then the checkpoints it ships (the release recipe only).
#   nohup bash scripts/run_recipe.sh aura/recipes/study-hearing.yaml runs/study-hearing > runs/study.log 2>&1 &
# Safe to rerun after an interruption: finished data is kept, each run continues with --resume (and a
# paused run with a raised step count), runs finished at their requested length and reports are skipped.
# ONLY="a b" trains just those runs (after the data) and stops before the commands and shipping.
# STEPS="name=N ..." replaces the recipe's step counts (a release recipe's JOINT_STEPS, MORE_STEPS,
# SCHEDULE_STEPS and DEEP_STEPS variables do the same for its joint, more, schedule and deep counts).
set -euo pipefail
RECIPE=${1:?usage: run_recipe.sh RECIPE.yaml [OUT]}
[ -f "$RECIPE" ] || { echo "run_recipe.sh: no recipe file $RECIPE" >&2; exit 2; }
RECIPE=$(realpath "$RECIPE")
OUT=${2:+$(realpath -m "$2")}  # both as the caller names them, before moving to the project
cd "$(dirname "$0")/.."
A=.venv/bin/aura
ONLY=${ONLY:-}  # run names to train, space-separated; empty: all of them, then eval, diagnose and ship
read -r -a STEPS <<<"${STEPS:-}"
for pair in joint:JOINT_STEPS more:MORE_STEPS schedule:SCHEDULE_STEPS deep:DEEP_STEPS; do
    var=${pair#*:}
    if [ -n "${!var:-}" ]; then STEPS+=("${pair%%:*}=${!var}"); fi
done
release() {  # part [options]: one recipe part, one tab-separated line per entry
    .venv/bin/python -m aura.train.release "$1" --recipe "$RECIPE" ${OUT:+--out "$OUT"} --steps "${STEPS[@]}" "${@:2}"
}
OUT=${OUT:-$(release out)}
DATA=$OUT/data
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
rows IMPORTS imports
for line in "${IMPORTS[@]}"; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r -a f <<<"$line"
    [ -d "$DATA/${f[0]}" ] || $A data import --out "$DATA/${f[0]}" "${f[@]:1}"
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
    sub=${f[0]%%:*}  # `diagnose:expert`: a second diagnose command
    dest=
    for ((i = 1; i < ${#f[@]} - 1; i++)); do [ "${f[i]}" != --out ] || dest=${f[i + 1]}; done
    case $sub in  # each command's report, when present, means it already ran
        eval) report=$dest/report.json ;;
        diagnose) report=$dest/alignment.json ;;
        *) report= ;;
    esac
    [ -n "$report" ] && [ -f "$report" ] || $A "$sub" "${f[@]:1}"
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
