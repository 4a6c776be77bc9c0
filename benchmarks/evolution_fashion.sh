#!/usr/bin/env bash
# Does the search pay? On Fashion-MNIST, the champion of a Neuro-Cell search against the base cell
# network trained for the same total number of epochs, over several seeds, as mean +- std
# (docs/evolution.md shows a measured table).
#
#   usage: benchmarks/evolution_fashion.sh [OUT_DIR]        (default OUT_DIR: runs/evolution_fashion_bench)
#
# Per seed, two evolve.py runs on the same data (TRAIN_SUBSET class-balanced images, 20% held out):
#   search  base BASE_EPOCHS, POPULATION mutants and GENERATIONS children of MUTATION_EPOCHS each,
#           then the champion FINAL_EPOCHS on train + validation, tested once;
#   base    --base_only: the base network for as many epochs as the whole search trained
#           (BASE_EPOCHS + (POPULATION + GENERATIONS) x MUTATION_EPOCHS), then FINAL_EPOCHS on
#           train + validation, tested once. Same epochs in all; the search's networks grow, so it
#           costs more FLOPs and time (both are in the table).
#
# The budget comes from the environment (defaults: the run in docs/evolution.md, ~20 min on 2 loaded cores):
#   SEEDS="0 1 2"  TRAIN_SUBSET=2000  POPULATION=3  GENERATIONS=2  BASE_EPOCHS=2  MUTATION_EPOCHS=2
#   FINAL_EPOCHS=2  NET_ARGS="--head_channels 8 --cell_channels 16 --tail_channels 16 --fc_units 32
#   --dropout_conv 0.2 --dropout_fc 0.2"  NGPU=0  WORKERS=0  PYTHON (default: .venv via scripts/env.sh)
#   OMP_NUM_THREADS=1: one torch thread per run; on a CPU shared with other jobs (and under nice) two
#   threads wait for each other and take twice as long.
#
# Writes OUT_DIR/results.md (the table), OUT_DIR/commands.txt (every command, exactly as run) and
# OUT_DIR/logs/; the runs are under OUT_DIR/runs/fashion_mnist/{search,base}/seed_<seed>/.
set -euo pipefail
export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle threads sleep: a shared CPU stays fast
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
source benchmarks/logged_run.sh

OUT="${1:-runs/evolution_fashion_bench}"
SEEDS="${SEEDS:-0 1 2}"
TRAIN_SUBSET="${TRAIN_SUBSET:-2000}"
POPULATION="${POPULATION:-3}"
GENERATIONS="${GENERATIONS:-2}"
BASE_EPOCHS="${BASE_EPOCHS:-2}"
MUTATION_EPOCHS="${MUTATION_EPOCHS:-2}"
FINAL_EPOCHS="${FINAL_EPOCHS:-2}"
NET_ARGS="${NET_ARGS:---head_channels 8 --cell_channels 16 --tail_channels 16 --fc_units 32 --dropout_conv 0.2 --dropout_fc 0.2}"
NGPU="${NGPU:-0}"
WORKERS="${WORKERS:-0}"
BASE_ONLY_EPOCHS=$((BASE_EPOCHS + (POPULATION + GENERATIONS) * MUTATION_EPOCHS))

mkdir -p "$OUT/logs"
: > "$OUT/commands.txt"
# shellcheck disable=SC2206  # NET_ARGS is a list of flags
COMMON=(--dataset fashion_mnist --train_subset "$TRAIN_SUBSET" --val_split 0.2 --save_path "$OUT/runs"
        --ngpu "$NGPU" --workers "$WORKERS" --batch_size 64 --eval_batch_size 500 $NET_ARGS)

# run LOG_NAME ARGS...: one evolve.py run, its command appended to commands.txt, its output to logs/.
run() {
    local name="$1"
    shift
    logged_run evolution_fashion "$name" "$PYTHON" evolve.py "${COMMON[@]}" "$@"
}

SECONDS=0
for seed in $SEEDS; do
    run "search_seed$seed" --tag search --manualSeed "$seed" --population_size "$POPULATION" \
        --tournament_fraction 0.5 --generations "$GENERATIONS" --base_epochs "$BASE_EPOCHS" \
        --mutation_epochs "$MUTATION_EPOCHS" --final_epochs "$FINAL_EPOCHS"
    run "base_seed$seed" --tag base --manualSeed "$seed" --base_only --base_epochs "$BASE_ONLY_EPOCHS" \
        --final_epochs "$FINAL_EPOCHS"
done

"$PYTHON" - "$OUT" "$SEEDS" <<'PY'
"""The champion against the base network: test top-1, size and cost, mean +- std over seeds."""
import json
import os
import statistics
import sys

out, seeds = sys.argv[1], sys.argv[2].split()


def summary(tag, seed):
    with open(os.path.join(out, "runs", "fashion_mnist", tag, f"seed_{seed}", "summary.json")) as handle:
        return json.load(handle)


def spread(values, fmt="{:.2f}"):
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(std)}"


lines = [f"Fashion-MNIST, test top-1 (%) and cost, mean ± std over seeds {', '.join(seeds)} "
         "(each network tested once, after its final training on train + validation).", "",
         "| network | test top-1 | parameters | MFLOPs / image | epochs | wall time (s) |",
         "|---|---:|---:|---:|---:|---:|"]
rows = {}
for tag, name in (("base", "base network, same epochs"), ("search", "search champion")):
    runs = [summary(tag, seed) for seed in seeds]
    rows[tag] = [r["final"]["test_top1"] for r in runs]
    lines.append(f"| {name} | {spread(rows[tag])} | {spread([r['final']['params'] for r in runs], '{:,.0f}')} | "
                 f"{spread([r['final']['flops'] / 1e6 for r in runs], '{:.1f}')} | {runs[0]['epochs']} | "
                 f"{spread([r['session_seconds'] for r in runs], '{:.0f}')} |")
gains = [s - b for s, b in zip(rows["search"], rows["base"])]
lines += ["", f"champion - base, per seed: {', '.join(f'{g:+.2f}' for g in gains)} "
              f"(mean {statistics.mean(gains):+.2f} points)"]
with open(os.path.join(out, "results.md"), "w") as handle:
    handle.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "evolution_fashion: done in $SECONDS s; table in $OUT/results.md, commands in $OUT/commands.txt"
