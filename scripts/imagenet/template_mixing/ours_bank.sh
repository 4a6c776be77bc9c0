#!/usr/bin/env bash
# MixtureGrowth on ImageNet with template banks shared across layers (--arch wrn_imagenet_bank):
# same-shape convs of a stage share banks (--bank_group_size, default 2), the input conv and the
# classifier are plain split weights, so the grown network holds ResNet-50's parameter count.
# This is the paper's ImageNet result.
#
#   usage: ours_bank.sh <NUM GPUS> imagenet <TAG> [EXTRA ARGS for main.py...]
#   e.g.   DATA_PATH=/datasets/imagenet ours_bank.sh 2 imagenet run_imagenet --template_size 0.5,0.5,1 \
#              --growth_epochs 90 --ensemble_train_epochs 74 --epochs 178
#
# DATA_PATH is the folder holding train/ and val/, each with one subfolder of images per class.
# The flags below are those of the paper's published script (including its learning rates of
# 0.004 before and after growth); 512 images per step in all, split over the processes.
# Environment (PYTHON, TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "imagenet" "$@"
BATCH_SIZE=$((512 / (NUM_GPUS > 1 ? NUM_GPUS : 1)))

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --arch wrn_imagenet_bank --depth 50 --wide 4 \
    --tag "$TAG" --batch_size "$BATCH_SIZE" --decay 1e-4 --scheduler_type cosine --no_nesterov \
    --workers 6 --lr_warmup_growing 0 --reset_lr_scheduler_growing 1 --learning_rate 0.004 --lr_growing 0.004 \
    --lr_schedule_as_member_0 --reset_scheduler --no_wandb "${@:4}"
