#!/usr/bin/env bash
# compare.py's fair protocol on one GPU, for a machine with one (not part of the tests):
#
#   usage: benchmarks/gpu_fair.sh OUT_DIR [SECONDS]
#
#   1. OUT_DIR/fair: the default Fashion-MNIST preset (WRN-10-2 / WRN-10-1, 10,000 images,
#      9 epochs, shared members, every method's lr chosen on validation), seeds 0, 1, 2, one
#      process per seed, all at once;
#   2. OUT_DIR/converged: the converged regime's premise (--preset fashion_mnist_converged: all
#      60,000 images, 30 epochs; batch 256 here, to fit the time): scratch_small and scratch_large
#      at lr 0.1, 3 seeds, one process per (method, seed), at the same time as 1.
# Then each comparison's report from its finished runs (--report_only), and OUT_DIR/results.tgz
# with every report, CSV, plot and log. Every process stops after SECONDS (default 420); a run cut
# there is left out of the report, and the same command continues it (--resume auto).
# DATA: FASHION_PATH (default /usr/share/datasets/fashion-mnist, or data/fashion-mnist in this tree).
# PYTHON: the interpreter (default: the repository's .venv via scripts/env.sh).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
OUT="$(output_dir "${1:?usage: benchmarks/gpu_fair.sh OUT_DIR [SECONDS]}")" || exit 2
LIMIT="${2:-420}"
require_cuda gpu_fair.sh
FAIR=(compare.py --data_path "$FASHION_PATH" --ngpu 1 --workers 2 --out "$OUT/fair")
CONVERGED=(compare.py --preset fashion_mnist_converged --data_path "$FASHION_PATH" --ngpu 1 --workers 2
           --scratch_lr_grid 0.1 --batch_size 256 --out "$OUT/converged")
started=$SECONDS
for seed in 0 1 2; do
    timeout -k 10 "$LIMIT" "$PYTHON" "${FAIR[@]}" --seeds "$seed" > "$OUT/fair_seed$seed.log" 2>&1 &
    for method in scratch_small scratch_large; do
        timeout -k 10 "$LIMIT" "$PYTHON" "${CONVERGED[@]}" --seeds "$seed" --methods "$method" \
            > "$OUT/converged_${method}_seed$seed.log" 2>&1 &
    done
done
wait
echo "all processes done in $((SECONDS - started)) s" | tee "$OUT/timing.txt"
"$PYTHON" "${FAIR[@]}" --report_only > "$OUT/fair_report.log" 2>&1
"$PYTHON" "${CONVERGED[@]}" --methods scratch_small,scratch_large --report_only > "$OUT/converged_report.log" 2>&1
cat "$OUT/fair/results.md" "$OUT/converged/results.md" 2>/dev/null
(cd "$OUT" && tar czf results.tgz --exclude='*.pth' --exclude='tensorboard' --exclude='*.tgz' .)
