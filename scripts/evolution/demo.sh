#!/usr/bin/env bash
# A whole Neuro-Cell architecture search on a CPU in a few minutes, on the embedded digits data
# (scikit-learn's 8x8 handwritten digits upsampled to 32x32; nothing to download):
#
#   base cell network (5 epochs) -> 4 mutated copies (3 epochs each) -> 5 generations of
#   tournament + mutation (3 epochs each) -> the champion trains 3 epochs on train + validation
#   and is tested once.
#
#   usage: scripts/evolution/demo.sh           (from any directory)
#
# Creates .venv in the repository root (if missing) and installs requirements.txt into it.
# PYTHON=/path/to/python skips the virtual environment and uses that interpreter instead.
# Outputs go to runs/evolution_demo/digits/demo/seed_0 (removed and rewritten on every run).
#
# The cell network is a narrow version of the reference's (8/16/16 channels instead of
# 64/128/128, dropout 0.2 instead of 0.7/0.5) and the search short, so that it fits a laptop;
# scripts/evolution/fashion.sh is a larger search, evolve.py's defaults are the reference's.
set -euo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if [[ -n "${PYTHON:-}" ]]; then
    echo "demo: using PYTHON=$PYTHON (no virtual environment created)"
fi
source scripts/env.sh  # without PYTHON: .venv (created once) with requirements.txt installed

SAVE_PATH=runs/evolution_demo
TAG=demo
SEED=0
RUN_DIR="$SAVE_PATH/digits/$TAG/seed_$SEED"

if [[ -d "$RUN_DIR" ]]; then
    echo "demo: removing the previous demo run $RUN_DIR"
    rm -rf "$RUN_DIR"
fi

SECONDS=0
"$PYTHON" evolve.py --dataset digits --tag "$TAG" --manualSeed "$SEED" --save_path "$SAVE_PATH" \
    --ngpu 0 --workers 0 --batch_size 64 \
    --head_channels 8 --cell_channels 16 --tail_channels 16 --fc_units 32 --dropout_conv 0.2 --dropout_fc 0.2 \
    --population_size 4 --tournament_fraction 0.5 --generations 5 \
    --base_epochs 5 --mutation_epochs 3 --final_epochs 3 "$@"

echo
echo "demo: done in ${SECONDS}s"
echo "  run folder:      $ROOT/$RUN_DIR"
echo "  lineage:         $ROOT/$RUN_DIR/lineage.jsonl"
echo "  plots:           $ROOT/$RUN_DIR/fitness_vs_generation.png, fitness_vs_params.png"
echo "  TensorBoard:     tensorboard --logdir $ROOT/$SAVE_PATH"
