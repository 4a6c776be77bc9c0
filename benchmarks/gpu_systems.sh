#!/usr/bin/env bash
# systems.py's report (docs/systems.md) on one GPU, for a machine with one (not part of the tests):
#
#   usage: benchmarks/gpu_systems.sh OUT_DIR [SECONDS]
#
# The Fashion-MNIST preset (WRN-10-1 members, WRN-10-2 grown, 10,000 images, every row at the
# fine-tuning budget of 3 grown epochs, lrs chosen on validation), seeds 0, 1, 2: one systems.py
# process per seed, all at once on the GPU. Every process stops after SECONDS (default 420); then
# one systems.py over the seeds that finished reads their runs back and writes the report
# (OUT_DIR/systems/results.md, the plot), and OUT_DIR/results.tgz holds reports, CSVs, plots and
# logs. A seed cut by the time limit is left out; the same command continues it (--resume auto).
# DATA: FASHION_PATH (default /usr/share/datasets/fashion-mnist, or data/fashion-mnist in this tree).
# PYTHON: the interpreter (default: the repository's .venv via scripts/env.sh).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
OUT="$(output_dir "${1:?usage: benchmarks/gpu_systems.sh OUT_DIR [SECONDS]}")" || exit 2
LIMIT="${2:-420}"
require_cuda gpu_systems.sh
SYSTEMS=(systems.py --data_path "$FASHION_PATH" --ngpu 1 --workers 2 --jobs 1 --out "$OUT/systems")
started=$SECONDS
declare -A pids
for seed in 0 1 2; do
    timeout -k 10 "$LIMIT" "$PYTHON" "${SYSTEMS[@]}" --seeds "$seed" > "$OUT/systems_seed$seed.log" 2>&1 &
    pids[$seed]=$!
done
finished=()
for seed in 0 1 2; do
    wait "${pids[$seed]}" && finished+=("$seed")
done
echo "seeds ${finished[*]:-none} finished; all processes done in $((SECONDS - started)) s" | tee "$OUT/timing.txt"
if (( ${#finished[@]} )); then
    seeds="$(IFS=,; echo "${finished[*]}")"
    "$PYTHON" "${SYSTEMS[@]}" --seeds "$seeds" > "$OUT/systems_report.log" 2>&1
    cat "$OUT/systems/results.md"
fi
(cd "$OUT" && tar czf results.tgz --exclude='*.pth' --exclude='tensorboard' --exclude='*.tgz' .)
