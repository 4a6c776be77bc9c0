#!/usr/bin/env bash
# The search against its baselines at equal training epochs, plus the cost-aware and Wide-ResNet
# variants, on Fashion-MNIST; a few minutes each on a shared 2-core CPU (docs/evolution.md, "Baselines").
#
#   usage: scripts/evolution/baselines.sh [OUT_DIR] [SEED]     (defaults: runs/evolution_baselines, 0)
#
# Every run: 600 class-balanced training images (20% held out for fitness), a narrow cell network,
# a population of 3, 4 generations, base 2 epochs, every individual 1 epoch, the champion 1 epoch on
# train + validation, tested once on the 10,000 test images. So every search trains
# 2 + (3 + 4) x 1 = 9 epochs plus 1: equal training epochs for every strategy.
#   tournament  the paper's (tournament parent, the least fit leaves)
#   aging       regularized evolution (tournament parent, the oldest leaves)
#   random      random search over the same mutations (uniform parent, the oldest leaves)
#   budget      tournament with --max_params 40000 (children over it are drawn again)
#   pareto      tournament with --objective pareto (validation top-1 up, FLOPs down)
#   wrn         tournament from a plain WRN-10-1 base
# Then scripts/evolution/compare_runs.py writes OUT_DIR/strategies.png and prints the table.
set -euo pipefail
export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then source scripts/env.sh; fi

OUT="${1:-runs/evolution_baselines}"
SEED="${2:-0}"
COMMON=(--dataset fashion_mnist --train_subset 600 --val_split 0.2 --save_path "$OUT" --manualSeed "$SEED"
        --ngpu 0 --workers 0 --batch_size 64 --eval_batch_size 500
        --head_channels 8 --cell_channels 16 --tail_channels 16 --fc_units 32 --dropout_conv 0.2 --dropout_fc 0.2
        --population_size 3 --tournament_fraction 0.5 --generations 4 --base_epochs 2 --mutation_epochs 1
        --final_epochs 1)
mkdir -p "$OUT"
run() {  # run TAG ARGS...
    local tag="$1"
    shift
    echo "$PYTHON evolve.py ${COMMON[*]} --tag $tag $*" | tee -a "$OUT/commands.txt"
    local start=$SECONDS
    "$PYTHON" evolve.py "${COMMON[@]}" --tag "$tag" "$@" > "$OUT/$tag.log" 2>&1
    echo "$tag: $((SECONDS - start)) s" | tee -a "$OUT/commands.txt"
}
: > "$OUT/commands.txt"
run tournament
run aging --strategy aging
run random --strategy random
run budget --max_params 40000
run pareto --objective pareto
run wrn --base wrn --wrn_depth 10 --wrn_width 1 --mutations wider,deeper,wider_kernel
folder() { echo "$OUT/fashion_mnist/$1/seed_$SEED"; }
"$PYTHON" scripts/evolution/compare_runs.py "$OUT/strategies.png" \
    "tournament=$(folder tournament)" "aging=$(folder aging)" "random=$(folder random)" \
    "budget 40k=$(folder budget)" "pareto=$(folder pareto)" "wrn base=$(folder wrn)" | tee "$OUT/results.md"
