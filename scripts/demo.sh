#!/usr/bin/env bash
# A whole MixtureGrowth cycle on a CPU in about a minute or two, on the embedded digits data
# (scikit-learn's 8x8 handwritten digits upsampled to 32x32; nothing to download):
#
#   member 0 -> member 1 -> growth (milliseconds) -> grown network -> evaluation of the grown
#   checkpoint, exactly as scripts/cifar/template_mixing/ours_test.sh evaluates a CIFAR run.
#
#   usage: scripts/demo.sh           (from any directory)
#
# Creates .venv in the repository root (if missing) and installs requirements.txt into it.
# PYTHON=/path/to/python skips the virtual environment and uses that interpreter instead.
# Outputs go to runs/demo/digits/demo/seed_0 (removed and rewritten on every run).
#
# The networks are small Wide-ResNets (WRN-10, members half as wide as the grown net) and the
# phases short, so that the demo fits a laptop; the CIFAR scripts use the paper's sizes.
set -euo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -n "${PYTHON:-}" ]]; then
    echo "demo: using PYTHON=$PYTHON (no virtual environment created)"
fi
source scripts/env.sh  # without PYTHON: .venv (created once) with requirements.txt installed

SAVE_PATH=runs/demo
TAG=demo
SEED=0
RUN_DIR="$SAVE_PATH/digits/$TAG/seed_$SEED"
# Same tag, seed and folder for training and evaluation: --resume auto finds the checkpoint.
RUN=(--dataset digits --tag "$TAG" --manualSeed "$SEED" --save_path "$SAVE_PATH" --workers 0 --ngpu 0)

if [[ -d "$RUN_DIR" ]]; then
    echo "demo: removing the previous demo run $RUN_DIR"
    rm -rf "$RUN_DIR"
fi

SECONDS=0
echo "demo: training member 0, member 1, growing, training the grown network"
# Epochs 0-7 member 0, 8-15 member 1, grow, 16-29 the grown network. The paper's grown phase
# (lr 1e-4, four cosine cycles) suits its 40 epochs after 400; for 14 epochs the demo uses one
# cosine cycle from lr 0.02. --recalibrate_bn 10: right after growth the BatchNorm statistics
# are re-estimated from 10 batches, so the summary shows the grown network both with the
# members' stale statistics and with its own.
"$PYTHON" main.py "${RUN[@]}" --arch wrn --depth 10 --wide 2 --template_size 0.5,0.5,1 \
    --growth_epochs 8 --ensemble_train_epochs 8 --epochs 30 --reset_scheduler \
    --lr_growing 0.02 --reset_lr_scheduler_growing 1 --batch_size 64 --recalibrate_bn 10 --no_wandb
train_seconds=$SECONDS

echo
echo "demo: evaluating the grown checkpoint"
"$PYTHON" main.py "${RUN[@]}" --evaluate --resume auto

echo
echo "demo: done in ${SECONDS}s (training ${train_seconds}s)"
echo "  run folder:     $ROOT/$RUN_DIR"
echo "  accuracy plot:  $ROOT/$RUN_DIR/accuracy.png"
echo "  TensorBoard:    tensorboard --logdir $ROOT/$SAVE_PATH"
