#!/usr/bin/env bash
# A Neuro-Cell architecture search on Fashion-MNIST in about 45 minutes of a shared 2-core CPU.
#
#   usage: scripts/evolution/fashion.sh [SEED] [EXTRA evolve.py ARGS...]      (default SEED 0)
#
# 6,000 class-balanced training images (20% of them held out for fitness), a narrow cell network
# (16/32/32 channels, 64 hidden units, dropout 0.3), a population of 5 and 8 generations:
#
#   base (7 epochs) -> 5 mutants (3 epochs each) -> 8 children (3 epochs each) -> the champion,
#   3 epochs on train + validation, tested once on the 10,000 test images.  49 epochs in all.
#
# The images come from /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) unless
# DATA_PATH names another folder. NGPU=1 trains on a GPU. Extra arguments go to evolve.py after the
# script's own, so they override them (e.g. --train_subset 0 --generations 20 for a longer search;
# evolve.py's defaults are the reference's: 64/128/128 channels, 15 individuals, 20 generations,
# 63 + 15 + 63 epochs). Outputs: runs/evolution_fashion/fashion_mnist/search/seed_<SEED>/.
# Interrupted (SIGTERM, Ctrl-C): run the same command again with --resume auto.
set -euo pipefail
export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle threads sleep: a shared CPU stays fast

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source scripts/env.sh

SEED="${1:-0}"
shift || true
DATA=()
if [[ -n "${DATA_PATH:-}" ]]; then DATA=("$DATA_PATH"); fi

SECONDS=0
"$PYTHON" evolve.py "${DATA[@]}" --dataset fashion_mnist --train_subset 6000 --val_split 0.2 \
    --tag search --manualSeed "$SEED" --save_path runs/evolution_fashion --ngpu "${NGPU:-0}" --workers 0 \
    --batch_size 64 --eval_batch_size 500 \
    --head_channels 16 --cell_channels 32 --tail_channels 32 --fc_units 64 --dropout_conv 0.3 --dropout_fc 0.3 \
    --population_size 5 --tournament_fraction 0.4 --generations 8 \
    --base_epochs 7 --mutation_epochs 3 --final_epochs 3 "$@"
echo "fashion search: done in ${SECONDS}s; run folder runs/evolution_fashion/fashion_mnist/search/seed_$SEED"
