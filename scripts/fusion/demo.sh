#!/usr/bin/env bash
# Neuron Transplantation on a CPU in a few minutes, on the embedded digits data (scikit-learn's 8x8
# handwritten digits upsampled to 32x32; nothing to download):
#
#   train member 0 and member 1 (WRN-10-1, different seeds) -> fuse them with NT (concatenate, prune
#   back to one member's width) -> fine-tune -> summary: each member, their ensemble, the fused
#   network before and after fine-tuning -> evaluate fused.pth with main.py, as any checkpoint.
#
#   usage: scripts/fusion/demo.sh           (from any directory)
#
# Creates .venv in the repository root (if missing) and installs requirements.txt into it;
# PYTHON=/path/to/python uses that interpreter instead. Outputs go to runs/fusion_demo/digits/nt/seed_0
# (removed and rewritten on every run). The budget is the demo's, not the paper's: members train 8
# epochs and the fused network 4, in batches of 64 (scripts/fusion/nt.sh has the authors' recipe).
set -euo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source scripts/env.sh  # without PYTHON: .venv (created once) with requirements.txt installed

SAVE_PATH=runs/fusion_demo
TAG=nt
SEED=0
RUN_DIR="$SAVE_PATH/digits/$TAG/seed_$SEED"
if [[ -d "$RUN_DIR" ]]; then
    echo "fusion demo: removing the previous demo run $RUN_DIR"
    rm -rf "$RUN_DIR"
fi

SECONDS=0
echo "fusion demo: training 2 members, fusing them with Neuron Transplantation, fine-tuning"
"$PYTHON" fuse.py --dataset digits --tag "$TAG" --manualSeed "$SEED" --save_path "$SAVE_PATH" --workers 0 \
    --ngpu 0 --train_members 2 --arch wrn --depth 10 --wide 1 --member_epochs 8 --member_lr 0.05 \
    --batch_size 64 --val_split 0.1 --method nt --finetune_epochs 4 --finetune_lr 0.01
fuse_seconds=$SECONDS

echo
echo "fusion demo: evaluating fused.pth with main.py"
"$PYTHON" main.py --dataset digits --evaluate --resume "$RUN_DIR/fused.pth" --ngpu 0 --workers 0

echo
echo "fusion demo: done in ${SECONDS}s (fuse.py ${fuse_seconds}s)"
echo "  run folder:     $ROOT/$RUN_DIR"
echo "  accuracy plot:  $ROOT/$RUN_DIR/accuracy.png"
echo "  TensorBoard:    tensorboard --logdir $ROOT/$SAVE_PATH"
