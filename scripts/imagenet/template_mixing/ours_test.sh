#!/usr/bin/env bash
# Evaluates the newest checkpoint of an ours.sh / ours_bank.sh run (the grown network, or the
# members when the run stopped before growing) on DATA_PATH/val. The network is rebuilt from the
# checkpoint's own arguments.
#
#   usage: ours_test.sh <NUM GPUS> imagenet <TAG> [EXTRA ARGS for main.py...]
#   e.g.   DATA_PATH=/datasets/imagenet ours_test.sh 1 imagenet run_imagenet
#          DATA_PATH=/datasets/imagenet ours_test.sh 1 imagenet run_imagenet --manualSeed 5
#
# Pass the same --save_path as the training run if it used one. Environment (PYTHON,
# TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "imagenet" "$@"

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --tag "$TAG" --evaluate --resume auto "${@:4}"
