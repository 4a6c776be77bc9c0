#!/usr/bin/env bash
# Neuron Transplantation: fuse k trained networks into one of a member's size, fine-tune it with the
# authors' recipe (SGD lr 0.01, momentum 0.9, constant lr, 30 epochs, batch 256), select the epoch on
# a 10% validation split, test once.
#
#   usage: nt.sh <NUM GPUS> <cifar10|cifar100|fashion_mnist|digits> <TAG> [EXTRA ARGS for fuse.py...]
#   e.g.   nt.sh 1 cifar100 nt_run --checkpoints runs/a/best.pth runs/b/best.pth
#          nt.sh 1 cifar100 mg_members --checkpoints snapshots/cifar100/first_run/seed_1/member_1.pth
#          nt.sh 0 fashion_mnist nt_demo --train_members 2 --arch wrn --depth 16 --wide 4 --member_epochs 30
#
# The members come from EXTRA ARGS: --checkpoints PATH PATH ... (main.py's or fuse.py's checkpoints; a
# pre-growth MixtureGrowth checkpoint gives its two members) or --train_members K. Other methods:
# --method nt_iterative | nt_hierarchical | average | ot | ensemble | best_member. Environment
# (PYTHON, TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
GIVEN_DATA_PATH="${DATA_PATH:-}"  # common.sh defaults DATA_PATH to data/
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
MG_ENTRY=fuse.py
mg_parse_args "cifar10 cifar100 fashion_mnist digits" "$@"
# digits is built in and fashion_mnist has its own default folder: DATA_PATH only when given.
DATA_ARGS=("$DATA_PATH")
if [[ -z "$GIVEN_DATA_PATH" && ( "$DATASET" == "digits" || "$DATASET" == "fashion_mnist" ) ]]; then
    DATA_ARGS=()
fi

# fuse.py is launched like main.py (0: CPU, 1: one GPU, N: torchrun + DDP).
mg_launch_entry fuse.py "$NUM_GPUS" "${DATA_ARGS[@]}" --dataset "$DATASET" --tag "$TAG" --method nt --val_split 0.1 \
    --batch_size 256 --finetune_epochs 30 --finetune_lr 0.01 --finetune_momentum 0.9 "${@:4}"
