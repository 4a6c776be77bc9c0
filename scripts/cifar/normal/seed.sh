#!/usr/bin/env bash
# Scratch baseline: a plain WRN-28-5 (the size of one MixtureGrowth member), 200 epochs.
#
#   usage: seed.sh <NUM GPUS> <cifar10|cifar100> <TAG> [EXTRA ARGS for main.py...]
#   e.g.   seed.sh 1 cifar100 seed_baseline --epochs 440   # extra args override the defaults
#
# Environment (PYTHON, TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "cifar10 cifar100" "$@"

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --arch normalwrn --depth 28 --wide 5 --cutout \
    --tag "$TAG" --batch_size 128 --decay 5e-4 --schedule 30 60 90 --gammas 0.2 0.2 0.2 \
    --reset_scheduler --no_wandb --growth_epochs -1 --epochs 200 "${@:4}"
