#!/usr/bin/env bash
# Neural Weight Search on a CPU in a few minutes: pools learned on Fashion-MNIST, then the five
# tasks of split_digits (0/1, 2/3, ..., 8/9) stored as pool indices, then every task rebuilt from
# its files and tested again (the accuracies must not move: nothing is forgotten).
#
#   usage: scripts/nws/demo.sh           (from any directory)
#
# The pools' source must be disjoint from the tasks: Fashion-MNIST (Debian's dataset-fashion-mnist,
# files in /usr/share/datasets/fashion-mnist; FASHION_PATH=... to point elsewhere) for the digits.
# Creates .venv in the repository root (if missing) and installs requirements.txt into it;
# PYTHON=/path/to/python uses that interpreter instead. Outputs go to runs/nws_demo (rewritten on
# every run). A small Wide-ResNet (WRN-10-2) and short phases keep it to a few minutes; the
# pretraining measures its network on 200 held-out training images (--val_split), not the 10,000
# test images. Tasks train at lr 0.2: with 8 epochs of 283 images a task that starts from the
# previous task's pool vectors needs large steps to move its weights into other pool cells.
set -euo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source scripts/env.sh

SAVE_PATH=runs/nws_demo
SEED=0
FASHION_PATH="${FASHION_PATH:-/usr/share/datasets/fashion-mnist}"
NETWORK=(--arch wrn --depth 10 --wide 2 --n_emb 512)
RUN=(--save_path "$SAVE_PATH" --manualSeed "$SEED" --workers 0 --ngpu 0)

rm -rf "$SAVE_PATH"
SECONDS=0
echo "nws demo: learning the pools on 1,800 Fashion-MNIST images"
"$PYTHON" nws.py pretrain "$FASHION_PATH" --dataset fashion_mnist --train_subset 2000 --val_split 0.1 \
    "${NETWORK[@]}" "${RUN[@]}" --epochs 4 --lr 0.05 --batch_size 64
pretrain_seconds=$SECONDS

echo
echo "nws demo: the five tasks of split_digits, each stored as pool indices + BatchNorms"
"$PYTHON" nws.py tasks --dataset digits "${NETWORK[@]}" "${RUN[@]}" \
    --pools "$SAVE_PATH/fashion_mnist/pools/seed_$SEED/pools.pth" --epochs 8 --lr 0.2 --batch_size 32

echo
echo "nws demo: every task rebuilt from its files alone"
"$PYTHON" nws.py evaluate --dataset digits "${RUN[@]}"

echo
echo "nws demo: done in ${SECONDS}s (pools ${pretrain_seconds}s)"
echo "  run folder:     $ROOT/$SAVE_PATH/digits/tasks/seed_$SEED"
echo "  accuracy plot:  $ROOT/$SAVE_PATH/digits/tasks/seed_$SEED/accuracy.png"
echo "  TensorBoard:    tensorboard --logdir $ROOT/$SAVE_PATH"
