#!/usr/bin/env bash
# Scratch baseline: a plain ResNet-50 (the size of the grown MixtureGrowth network), 90 epochs.
#
#   usage: target.sh <NUM GPUS> imagenet <TAG> [EXTRA ARGS for main.py...]
#   e.g.   DATA_PATH=/datasets/imagenet target.sh 2 imagenet target_baseline --epochs 178   # extra args override
#
# DATA_PATH is the folder holding train/ and val/, each with one subfolder of images per class.
# Flags as in the paper's published script (SGD without Nesterov, weight decay 1e-4, cosine
# schedule, 512 images per step in all, split over the processes). Environment (PYTHON,
# TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "imagenet" "$@"
BATCH_SIZE=$((512 / (NUM_GPUS > 1 ? NUM_GPUS : 1)))

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --arch normal_wrn_imagenet --depth 50 --wide 4 \
    --tag "$TAG" --batch_size "$BATCH_SIZE" --decay 1e-4 --scheduler_type cosine --no_nesterov \
    --growth_epochs -1 --epochs 90 "${@:4}"
