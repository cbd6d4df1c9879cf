#!/usr/bin/env bash
# Reproduce the shipped checkpoints `aura-smollm2-135m` and `aura-smollm2-135m-bridge` from the release
# recipe aura/recipes/shipped.yaml: its data, every training stage (AuRA's distillation and three joint
# stages, the no-distillation ablation and the bridge with the same joint stages), the one `aura eval`
# run and `aura diagnose` of the model cards (docs/models/), then the shipped folders. About 18 h on 2
# CPU cores. Options as scripts/run_recipe.sh (ONLY, JOINT_STEPS, MORE_STEPS, SCHEDULE_STEPS, DEEP_STEPS).
#   nohup bash scripts/train_shipped.sh runs/shipped > runs/shipped.log 2>&1 &
here=$(dirname "$0")
exec bash "$here/run_recipe.sh" "$here/../aura/recipes/shipped.yaml" "${1:-$here/../runs/shipped}"
