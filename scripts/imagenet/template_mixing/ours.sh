#!/usr/bin/env bash
# MixtureGrowth on ImageNet: two half-width members (ResNet-50 widths / 2) built from templates,
# grown into a ResNet-50-size network (--arch wrn_imagenet, every layer has its own templates).
#
#   usage: ours.sh <NUM GPUS> imagenet <TAG> [EXTRA ARGS for main.py...]
#   e.g.   DATA_PATH=/datasets/imagenet ours.sh 2 imagenet run_imagenet --template_size 0.5,0.5,1 \
#              --growth_epochs 90 --ensemble_train_epochs 74 --epochs 178
#
# DATA_PATH is the folder holding train/ and val/, each with one subfolder of images per class
# (the ILSVRC CLS-LOC layout). The flags below are those of the paper's published script: SGD
# without Nesterov, weight decay 1e-4, cosine schedule, 512 images per step in all (split over
# the processes: --batch_size is per process). Environment (PYTHON, TORCHRUN, DATA_PATH,
# DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "imagenet" "$@"
BATCH_SIZE=$((512 / (NUM_GPUS > 1 ? NUM_GPUS : 1)))

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --arch wrn_imagenet --depth 50 --wide 4 \
    --tag "$TAG" --batch_size "$BATCH_SIZE" --decay 1e-4 --scheduler_type cosine --no_nesterov "${@:4}"
