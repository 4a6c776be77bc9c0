#!/usr/bin/env bash
# MixtureGrowth on CIFAR: two WRN-28-5 members built from templates, grown into WRN-28-10.
#
#   usage: ours.sh <NUM GPUS> <cifar10|cifar100> <TAG> [EXTRA ARGS for main.py...]
#   e.g.   ours.sh 1 cifar100 first_run --template_size 0.5,0.5,1 --growth_epochs 200 \
#              --ensemble_train_epochs 200 --epochs 440
#
# The flags below are those of the paper's published script. Environment (PYTHON, TORCHRUN,
# DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "cifar10 cifar100" "$@"

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --arch wrn --depth 28 --wide 10 --cutout \
    --tag "$TAG" --batch_size 128 --decay 5e-4 --schedule 30 60 90 --gammas 0.2 0.2 0.2 \
    --reset_scheduler --no_wandb "${@:4}"
