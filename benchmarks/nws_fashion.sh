#!/usr/bin/env bash
# split_fashion (5 tasks of 2 Fashion-MNIST classes): NWS against two plain baselines, several seeds.
#
#   nws           pools pretrained on the digits (disjoint from the tasks), tasks stored as indices
#   nws_untrained the alternative source: pools never trained (Gaussian, 'nws.py pretrain --epochs 0')
#   plain_per_task    a plain network fine-tuned task after task, every task's float weights stored
#   plain_sequential  the same training, one network kept: earlier tasks re-measured at the end (forgetting)
#
# Every method trains the same small Wide-ResNet with the same recipe, seeds and data; a task starts
# from the previous task's network (NWS: rebuilt from its indices) with a fresh head. The two plain
# methods train identically (same seeds, same path; tests/test_nws_cli.py checks it), so one
# plain_sequential run per seed gives both: plain_per_task's accuracy of a task is the accuracy
# right after it (its weights are kept), its memory the float weights of every task.
#
#   usage: benchmarks/nws_fashion.sh            (environment variables below change the budget)
#
# Writes runs/nws_fashion/results.md (per-task and average top-1, mean +- std over seeds, memory).
set -euo pipefail
export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle OpenMP threads sleep (a shared machine), as in the tests
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

SEEDS="${SEEDS:-0 1 2}"
EPOCHS="${EPOCHS:-3}"                 # epochs per task
TRAIN_SUBSET="${TRAIN_SUBSET:-500}"   # training images per task (class-balanced), of 12,000
POOL_EPOCHS="${POOL_EPOCHS:-8}"       # pretraining epochs on the 1,437 training digits
FASHION_PATH="${FASHION_PATH:-/usr/share/datasets/fashion-mnist}"
OUT="${OUT:-runs/nws_fashion}"
NETWORK=(--arch wrn --depth 10 --wide 2 --n_emb 512)
COMMON=(--save_path "$OUT" --workers 0 --ngpu 0)
LR="${LR:-0.1}"
# Each task is measured once, right after it is stored (--test_every 0: no test pass per epoch).
RECIPE=(--epochs "$EPOCHS" --lr "$LR" --batch_size 32 --train_subset "$TRAIN_SUBSET" --test_every 0)

SECONDS=0
"$PYTHON" nws.py pretrain --dataset digits "${NETWORK[@]}" "${COMMON[@]}" --manualSeed 100 --tag pools \
    --epochs "$POOL_EPOCHS" --lr 0.05 --batch_size 64 --val_split 0.1
"$PYTHON" nws.py pretrain --dataset digits "${NETWORK[@]}" "${COMMON[@]}" --manualSeed 100 --tag untrained \
    --epochs 0
for seed in $SEEDS; do
    "$PYTHON" nws.py tasks "$FASHION_PATH" --dataset fashion_mnist "${NETWORK[@]}" "${COMMON[@]}" "${RECIPE[@]}" \
        --manualSeed "$seed" --tag nws --pools "$OUT/digits/pools/seed_100/pools.pth"
    "$PYTHON" nws.py tasks "$FASHION_PATH" --dataset fashion_mnist "${NETWORK[@]}" "${COMMON[@]}" "${RECIPE[@]}" \
        --manualSeed "$seed" --tag nws_untrained --pools "$OUT/digits/untrained/seed_100/pools.pth"
    "$PYTHON" nws.py tasks "$FASHION_PATH" --dataset fashion_mnist "${NETWORK[@]}" "${COMMON[@]}" "${RECIPE[@]}" \
        --manualSeed "$seed" --tag plain_sequential --method plain_sequential
done

"$PYTHON" - "$OUT" "$SECONDS" <<'PY'
import glob, json, os, statistics, sys

out, seconds = sys.argv[1], int(sys.argv[2])
def mean_std(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

lines = ["| method | seeds | " + " | ".join(f"task {t}" for t in range(5)) + " | average right after | average at the end | MB after 5 tasks |",
         "|---|---:|" + "---:|" * 8]
def row(name, runs, right_after, final, megabytes):
    per_task = [mean_std([right_after(r, t) for r in runs]) for t in range(5)]
    averages = [mean_std([statistics.mean(f(r, t) for t in range(5)) for r in runs]) for f in (right_after, final)]
    lines.append(f"| {name} | {len(runs)} | " + " | ".join(per_task) + f" | {averages[0]} | {averages[1]} | {megabytes:.3f} |")

right_after = lambda r, t: r["tasks"][t]["right_after_top1"]
final = lambda r, t: r["tasks"][t]["final_top1"]
for tag in ("nws", "nws_untrained", "plain_sequential"):
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "fashion_mnist", tag, "seed_*", "summary.json")))]
    if not runs:
        continue
    memory = runs[0]["memory"]
    if tag == "plain_sequential":  # the same training also gives plain_per_task (every task's weights kept)
        row("plain_per_task", runs, right_after, right_after, memory["float_total"] / 2**20)
    row(tag, runs, right_after, final, memory["total"] / 2**20)
text = ("Top-1 (%) of each task right after it was trained, their average, and the average re-measured "
        f"after the last task (mean ± std over seeds); {seconds} s in all.\n\n" + "\n".join(lines) + "\n")
open(os.path.join(out, "results.md"), "w").write(text)
print(text)
PY
