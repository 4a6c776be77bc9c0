#!/usr/bin/env bash
# The comparison report: scratch-small, scratch-large, the members' ensemble, Net2Net, GradMax, Firefly,
# random-block growth and MixtureGrowth (--coefs_growing orthogonal, copy, zero), every method over every seed
# with the same total epochs, shared members and its lr chosen on validation (the fair protocol);
# writes results.md, results.csv, grid.csv, runs.csv, accuracy.png, accuracy_vs_flops.png and
# config.json into --out (default runs/compare).
#
#   usage: scripts/compare.sh [compare.py flags] [main.py flags passed to every run]
#   e.g.   scripts/compare.sh --preset fashion_mnist_capacity --seeds 0,1,2,3,4 --out runs/compare_capacity
#                                       # the paper's claims: WRN-10-0.5 grown from WRN-10-0.25-sized members,
#                                       # 10k images, 20 epochs, eight rows (CPU, about 20 minutes a seed here)
#          scripts/compare.sh          # fashion_mnist preset, compute-limited: WRN-10-2 vs WRN-10-1, 10k images,
#                                       # 9 epochs, seeds 0,1,2, eight rows (CPU)
#          scripts/compare.sh --dataset digits --seeds 0      # the digits (fast, but every method ~99%)
#          scripts/compare.sh --seeds 0 --epochs 9 --member_epochs 3 --out runs/compare_quick
#          scripts/compare.sh --dataset cifar100 --data_path data --ngpu 1 --workers 4 --depth 28 --wide 10 \
#              --epochs 440 --member_epochs 200 --cutout --reset_scheduler   # the paper's budget, on a GPU
#
# PYTHON=/path/to/python skips the virtual environment (see scripts/env.sh); DRY_RUN=1 prints the
# command instead of running it.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mg_exec "$PYTHON" compare.py "$@"
