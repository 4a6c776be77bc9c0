#!/usr/bin/env bash
# One report across the systems: from the same two trained members per seed, their ensemble,
# MixtureGrowth (orthogonal and zero, grown and trained), Neuron Transplantation, weight averaging
# and OT fusion (fine-tuned) and each member fine-tuned alone, every row at one fine-tuning budget
# in training FLOPs, lrs chosen on validation; writes results.md, results.csv, runs.csv,
# accuracy_vs_inference_flops.png and config.json into --out (default runs/systems). docs/systems.md.
#
#   usage: scripts/systems.sh [systems.py flags]
#   e.g.   scripts/systems.sh          # fashion_mnist: WRN-10-1 members, WRN-10-2 grown, 10k images,
#                                       # seeds 0,1,2, --jobs 2 (CPU, see docs/systems.md for the time)
#          scripts/systems.sh --dataset digits --seeds 0 --member_epochs 1 --grown_epochs 1 --wide 0.5
#
# PYTHON=/path/to/python skips the virtual environment (see scripts/env.sh); DRY_RUN=1 prints the
# command instead of running it.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mg_exec "$PYTHON" systems.py "$@"
