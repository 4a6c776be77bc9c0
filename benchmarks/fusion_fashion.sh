#!/usr/bin/env bash
# Fusion accuracy on Fashion-MNIST: every row of SPEC-transplant section 5, K = 2 and K = 4 members,
# over several seeds, as a table of mean +- std (docs/fusion.md shows a measured one).
#
#   usage: benchmarks/fusion_fashion.sh [OUT_DIR]          (default OUT_DIR: runs/fusion_fashion)
#
# Per seed: one fuse.py run trains the largest K of members (member i from seed + 1000 (i + 1)) and
# reports them and their ensemble; then, for each K, the first K members are fused by every method,
# each in its own fuse.py run (--checkpoints), and fine-tuned with the authors' recipe (SGD lr 0.01,
# momentum 0.9, constant lr, batch 256; the epoch chosen on the 10% validation split; test once).
# nt_iterative and nt_hierarchical run for K > 2 only: for two members they are nt (a test checks it).
#
# The budget comes from the environment (defaults: the run in docs/fusion.md, ~25 min on 2 loaded cores):
#   SEEDS="0 1 2"  KS="2 4"  TRAIN_SUBSET=6000  MEMBER_EPOCHS=4  FINETUNE_EPOCHS=3
#   MEMBER_ARGS="--arch mlp --hidden 512,512 --member_lr 0.05 --batch_size 128"
#   NGPU=0  WORKERS=0  PYTHON (default: the repository's .venv, scripts/env.sh)
# The paper's budget: FINETUNE_EPOCHS=30 TRAIN_SUBSET=0 MEMBER_EPOCHS=30 (and a GPU: NGPU=1).
#
# Writes OUT_DIR/results.md (the table), OUT_DIR/results.csv (one line per run and row),
# OUT_DIR/commands.txt (every command, exactly as run) and OUT_DIR/logs/ (each run's output);
# the runs themselves are under OUT_DIR/runs/fashion_mnist/<tag>/seed_<seed>/.
set -euo pipefail
export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle threads sleep: a shared CPU stays fast

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
source benchmarks/logged_run.sh

OUT="${1:-runs/fusion_fashion}"
SEEDS="${SEEDS:-0 1 2}"
KS="${KS:-2 4}"
TRAIN_SUBSET="${TRAIN_SUBSET:-6000}"
MEMBER_EPOCHS="${MEMBER_EPOCHS:-4}"
FINETUNE_EPOCHS="${FINETUNE_EPOCHS:-3}"
MEMBER_ARGS="${MEMBER_ARGS:---arch mlp --hidden 512,512 --member_lr 0.05 --batch_size 128}"
NGPU="${NGPU:-0}"
WORKERS="${WORKERS:-0}"

K_MAX=0
for k in $KS; do (( k > K_MAX )) && K_MAX=$k; done
mkdir -p "$OUT/logs"
: > "$OUT/commands.txt"
COMMON=(--dataset fashion_mnist --train_subset "$TRAIN_SUBSET" --val_split 0.1 --save_path "$OUT/runs"
        --ngpu "$NGPU" --workers "$WORKERS" --eval_batch_size 1000)

# run LOG_NAME ARGS...: one fuse.py run, its command appended to commands.txt, its output to logs/.
run() {
    local name="$1"
    shift
    logged_run fusion_fashion "$name" "$PYTHON" fuse.py "${COMMON[@]}" "$@"
}

SECONDS=0
for seed in $SEEDS; do
    # shellcheck disable=SC2086  # MEMBER_ARGS is a list of flags
    run "members_seed$seed" --tag members --manualSeed "$seed" --train_members "$K_MAX" \
        --member_epochs "$MEMBER_EPOCHS" $MEMBER_ARGS --method ensemble --finetune_epochs 0
    member_dir="$OUT/runs/fashion_mnist/members/seed_$seed"
    for k in $KS; do
        checkpoints=()
        for ((i = 0; i < k; i++)); do checkpoints+=("$member_dir/member_$i.pth"); done
        methods="nt average ot best_member"
        (( k > 2 )) && methods="nt nt_iterative nt_hierarchical average ot best_member"
        for method in $methods; do
            run "k${k}_${method}_seed$seed" --tag "k${k}_${method}" --manualSeed "$seed" \
                --checkpoints "${checkpoints[@]}" --method "$method" --batch_size 256 \
                --finetune_epochs "$FINETUNE_EPOCHS" --finetune_lr 0.01 --finetune_momentum 0.9
        done
    done
done

"$PYTHON" - "$OUT" "$KS" "$SEEDS" <<'EOF'
"""Collect every run's summary.json into results.csv and a mean +- std table, results.md."""
import csv
import json
import os
import statistics
import sys

out, ks, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = os.path.join(out, "runs", "fashion_mnist")


def summary(tag, seed):
    with open(os.path.join(runs, tag, f"seed_{seed}", "summary.json")) as handle:
        return json.load(handle)


def spread(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


records, table = [], []
for k in ks:
    order = ["nt", "nt_iterative", "nt_hierarchical", "average", "ot", "best_member"]
    tags = sorted((t for t in os.listdir(runs) if t.startswith(f"k{k}_")), key=lambda t: order.index(t[len(k) + 2:]))
    first = {seed: summary(tags[0], seed) for seed in seeds}
    members = [[r for r in first[seed] if r["network"].startswith("member ")] for seed in seeds]
    table.append((k, f"members (mean of {k})", [statistics.mean(r["test_top1"] for r in m) for m in members], None,
                  None))
    table.append((k, "best member (by val)", [max(m, key=lambda r: r["val_top1"])["test_top1"] for m in members],
                  None, None))
    table.append((k, f"ensemble of {k}", [next(r["test_top1"] for r in first[seed] if r["network"].startswith(
        "ensemble")) for seed in seeds], None, None))
    for tag in tags:
        method = tag[len(f"k{k}_"):]
        rows = {seed: {r["network"]: r for r in summary(tag, seed)} for seed in seeds}
        before = [rows[s][f"{method} before fine-tuning"]["test_top1"] for s in seeds]
        after = [rows[s].get(f"{method} after fine-tuning", {}).get("test_top1") for s in seeds]
        seconds = [rows[s][f"{method} before fine-tuning"].get("seconds") for s in seeds]
        table.append((k, method, before, after, seconds))
        for seed in seeds:
            for row in summary(tag, seed):
                records.append({"k": k, "method": method, "seed": seed, **row})

with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=sorted({key for r in records for key in r}))
    writer.writeheader()
    writer.writerows(records)
lines = [f"Fashion-MNIST test top-1 (%), mean ± std over seeds {', '.join(seeds)}; fused rows: right after fusion, "
         "and after fine-tuning (the epoch with the best validation top-1).", "",
         "| K | network | test top-1 | after fine-tuning | fusion seconds |", "|---:|---|---:|---:|---:|"]
for k, name, before, after, seconds in table:
    shown = spread(seconds, 3) if seconds and any(s is not None for s in seconds) else "-"
    lines.append(f"| {k} | {name} | {spread(before)} | {spread(after) if after else '-'} | {shown} |")
with open(os.path.join(out, "results.md"), "w") as handle:
    handle.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "fusion_fashion: done in $SECONDS s; table in $OUT/results.md, commands in $OUT/commands.txt"
