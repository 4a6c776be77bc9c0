#!/usr/bin/env bash
# Evaluates the newest checkpoint of an ours.sh run (the grown network, or the members when the
# run stopped before growing), or of a main.py run on the digits such as scripts/demo.sh's. The
# network is rebuilt from the checkpoint's own arguments.
#
#   usage: ours_test.sh <NUM GPUS> <cifar10|cifar100|digits> <TAG> [EXTRA ARGS for main.py...]
#   e.g.   ours_test.sh 1 cifar100 first_run                  # newest seed_* folder of the tag
#          ours_test.sh 1 cifar100 first_run --manualSeed 5   # the run with seed 5
#          ours_test.sh 0 digits demo --save_path runs/demo   # the demo's grown network
#
# Pass the same --save_path as the training run if it used one. Environment (PYTHON,
# TORCHRUN, DATA_PATH, DRY_RUN) and NUM GPUS: see scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
mg_parse_args "cifar10 cifar100 digits" "$@"

mg_launch "$NUM_GPUS" "$DATA_PATH" --dataset "$DATASET" --tag "$TAG" --evaluate --resume auto "${@:4}"
