#!/usr/bin/env bash
# Every CUDA path of the toolkit in one command, for a machine with a GPU (not part of the tests).
#
#   usage: benchmarks/gpu_check.sh OUT_DIR
#
# Runs, each with its log in OUT_DIR and a line in OUT_DIR/summary.txt (PASS/FAIL, seconds):
#   1. fp16 AMP with loss scaling through all three phases (digits, --amp --ngpu 1)
#   2. --channels_last through all three phases
#   3. --compile through all three phases
#   4. a 1-GPU NCCL process group under torchrun (--dist)
#   5. on-device ImageNet augmentation (CUDA vs CPU, same random numbers) and an fp16 grown
#      WRN-16-4 step with GradScaler (benchmarks/gpu_checks.py -> gpu_figures.json)
#   6. bench_step.py --device cuda: template-mixed vs plain step times of WRN-16-4 and WRN-28-10,
#      fp32 (bench_step.json, with A/A rows, generation variants and op counts), then with
#      --amp --channels-last (bench_step_amp_channels_last.json); the ratios of both are printed
#      at the end and written to step_ratios.txt
#   7. only with GPU_CHECK_COMPILE=1: the weight generation alone under torch.compile against
#      eager (bench_step.py --generation-only, WRN-28-10; bench_generation_compiled.json)
#   8. only with GPU_CHECK_COMPARE=1: benchmarks/gpu_fair.sh — the fair Fashion-MNIST comparison
#      (compare.py's preset, seeds 0,1,2, a process per seed) and the converged regime's premise
#      (scratch small vs large on all 60,000 images, 30 epochs), at once (fair/results.tgz)
#   9. only with GPU_CHECK_SYSTEMS=1: benchmarks/gpu_systems.sh — systems.py's report (grow, fuse,
#      average or ensemble the same two members) on Fashion-MNIST, seeds 0,1,2, a process per seed
#      (systems/results.tgz; not yet run on a GPU)
# GPU_CHECK_BENCH_ONLY=1 skips checks 1-5.
# Budget: about 5 minutes on one modern GPU by default (on an H200: checks 1-5 in 195 s with
# fvcore carried in, about 25 s of each being Python and torch start-up; bench_step 47 s and
# bench_step_amp_cl 29 s); check 7 adds about 50 s (compilation), check 8 up to 7 minutes (not yet
# measured whole: its first try was cut by the device's time).
# Each check has its own time limit (a hung check is recorded as TIMEOUT and the next one runs). DATA_PATH for Fashion-MNIST: FASHION_PATH
# (default /usr/share/datasets/fashion-mnist, or data/fashion-mnist in this tree if present).
# PYTHON: the interpreter (default: the repository's .venv via scripts/env.sh).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
OUT="$(output_dir "${1:?usage: benchmarks/gpu_check.sh OUT_DIR}")" || exit 2
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
TINY=(--dataset digits --depth 10 --wide 2 --epochs 6 --growth_epochs 2 --ensemble_train_epochs 2
      --reset_scheduler --reset_lr_scheduler_growing none --cosine_lr_warmup 0 --lr_growing 0.05
      --lr_warmup_growing 0 --batch_size 64 --workers 2 --manualSeed 1 --save_path "$OUT/runs")

check() {  # check SECONDS NAME COMMAND...: runs it, logs to OUT/NAME.log, records PASS/FAIL and seconds
    local limit="$1" name="$2"; shift 2
    local started=$SECONDS status rc
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=PASS ;;
        124|137) status="TIMEOUT (${limit}s)" ;;
        *) status="FAIL (exit $rc)" ;;
    esac
    printf '%-22s %-14s %4ds\n' "$name" "$status" $((SECONDS - started)) | tee -a "$SUMMARY"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
require_cuda gpu_check.sh
if [[ "${GPU_CHECK_BENCH_ONLY:-0}" != 1 ]]; then
    check 120 amp_fp16        "$PYTHON" main.py "${TINY[@]}" --tag amp --ngpu 1 --amp
    check 120 channels_last   "$PYTHON" main.py "${TINY[@]}" --tag channels_last --ngpu 1 --channels_last
    check 180 compile         "$PYTHON" main.py "${TINY[@]}" --tag compile --ngpu 1 --compile
    check 120 nccl_1gpu       "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 main.py \
                         "${TINY[@]}" --tag nccl --ngpu 1 --dist
    check 90  gpu_figures     "$PYTHON" benchmarks/gpu_checks.py --out "$OUT/gpu_figures.json"
    grep -h "overflow steps skipped\|summary:" -A 8 "$OUT/amp_fp16.log" | tail -12 > "$OUT/amp_summary.txt" || true
fi
check 150 bench_step      "$PYTHON" benchmarks/bench_step.py --device cuda --models wrn16-4,wrn28-10 --batch-size 128 \
                     --repeats 10 --control --out "$OUT/bench_step.json"
check 120 bench_step_amp_cl "$PYTHON" benchmarks/bench_step.py --device cuda --models wrn16-4,wrn28-10 \
                     --batch-size 128 --repeats 10 --amp --channels-last --no-op-counts --grow-repeats 0 \
                     --out "$OUT/bench_step_amp_channels_last.json"
if [[ "${GPU_CHECK_COMPILE:-0}" == 1 ]]; then
    check 180 generation_compiled "$PYTHON" benchmarks/bench_step.py --device cuda --models wrn28-10 \
                         --generation-only --generation-variants per-layer,batched,compiled \
                         --out "$OUT/bench_generation_compiled.json"
fi
if [[ "${GPU_CHECK_COMPARE:-0}" == 1 ]]; then
    check 480 compare_fair env FASHION_PATH="$FASHION_PATH" bash benchmarks/gpu_fair.sh "$OUT/fair" 420
fi
if [[ "${GPU_CHECK_SYSTEMS:-0}" == 1 ]]; then
    check 480 systems env FASHION_PATH="$FASHION_PATH" bash benchmarks/gpu_systems.sh "$OUT/systems" 420
fi
"$PYTHON" benchmarks/bench_step.py --ratios "$OUT/bench_step.json" "$OUT/bench_step_amp_channels_last.json" \
    | tee "$OUT/step_ratios.txt"
echo "gpu_check: done in ${SECONDS}s; summary in $SUMMARY"
