# Shared by the experiment scripts; sourced, never run. Every script takes
#
#     <NUM GPUS> <DATASET> <TAG> [EXTRA ARGS...]
#
# and ends with `mg_launch "$NUM_GPUS" <main.py arguments...> "${@:4}"`.
#
# NUM GPUS   0: one CPU process (--ngpu 0); 1: one process on one GPU (--ngpu 1);
#            N > 1: torchrun starts N processes, one GPU each (--ngpu 1 --dist).
# EXTRA ARGS are passed to main.py unchanged, after the script's own flags, so they
#            override them (argparse keeps the last value of a flag).
#
# Environment:
#   PYTHON     interpreter that runs main.py (default: the repository's .venv, the one the demo
#              and the tests use; created and filled from requirements.txt on first use)
#   TORCHRUN   launcher for NUM GPUS > 1 (default: the torchrun beside PYTHON, else torchrun
#              from PATH; it must belong to the same environment as PYTHON)
#   DATA_PATH  folder of the data set (default: data)
#   DRY_RUN=1  print the command (one line, every argument shell-quoted) instead of running it
#
# The command runs from the repository root, so relative paths (DATA_PATH, --save_path, ...)
# are taken from there, wherever the script was called from.

set -euo pipefail
export PYTHONUNBUFFERED=1

MG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_PATH="${DATA_PATH:-data}"
source "$MG_ROOT/scripts/env.sh"  # PYTHON: given, or the .venv (no reinstall when up to date)
if [[ -z "${TORCHRUN:-}" && -x "$(dirname "$PYTHON")/torchrun" && "$PYTHON" == */* ]]; then
    TORCHRUN="$(dirname "$PYTHON")/torchrun"
fi

# The calling script's path relative to the repository root, for messages.
MG_SCRIPT="${0#"$MG_ROOT"/}"

# mg_usage_error MESSAGE: what is wrong, then the usage line, on stderr; exit status 2.
mg_usage_error() {
    echo "$MG_SCRIPT: error: $1" >&2
    echo "usage: $MG_SCRIPT <NUM GPUS> <${MG_DATASETS// /|}> <TAG> [EXTRA ARGS for ${MG_ENTRY:-main.py}...]" >&2
    exit 2
}

# mg_parse_args "DATASET CHOICES" "$@": checks the three positional arguments and sets
# NUM_GPUS, DATASET and TAG.
mg_parse_args() {
    MG_DATASETS="$1"
    shift
    if [[ $# -lt 3 ]]; then
        mg_usage_error "expected at least 3 arguments, got $#"
    fi
    NUM_GPUS="$1"
    DATASET="$2"
    TAG="$3"
    if ! [[ "$NUM_GPUS" =~ ^[0-9]+$ ]]; then
        mg_usage_error "NUM GPUS must be a non-negative integer, got '$NUM_GPUS'"
    fi
    NUM_GPUS=$((10#$NUM_GPUS))  # "01" -> 1
    if ! [[ " $MG_DATASETS " == *" $DATASET "* ]]; then
        mg_usage_error "DATASET must be one of: $MG_DATASETS; got '$DATASET'"
    fi
    if [[ -z "$TAG" ]]; then
        mg_usage_error "TAG must not be empty"
    fi
    if [[ "$TAG" == -* ]]; then
        mg_usage_error "TAG must not start with '-' (got '$TAG'); it names the run folder"
    fi
}

# mg_launch_entry ENTRY NUM_GPUS ARGS...: runs ENTRY (main.py, fuse.py, ...) with ARGS, on the
# CPU, on one GPU, or under torchrun with one process per GPU; with DRY_RUN=1 only prints the command.
mg_launch_entry() {
    local entry="$1" num_gpus="$2"
    shift 2
    local -a command
    if [[ "$num_gpus" -eq 0 ]]; then
        command=("$PYTHON" "$entry" "$@" --ngpu 0)
    elif [[ "$num_gpus" -eq 1 ]]; then
        command=("$PYTHON" "$entry" "$@" --ngpu 1)
    else
        command=("${TORCHRUN:-torchrun}" --standalone "--nproc_per_node=$num_gpus" "$entry" "$@" --ngpu 1 --dist)
    fi
    mg_exec "${command[@]}"
}

# mg_exec COMMAND...: runs COMMAND from the repository root in place of the script; with DRY_RUN=1
# prints it instead (one line, every argument shell-quoted).
mg_exec() {
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
        local quoted
        printf -v quoted '%q ' "$@"
        echo "${quoted% }"
        exit 0
    fi
    cd "$MG_ROOT"
    exec "$@"
}

# mg_launch NUM_GPUS MAIN_ARGS...: mg_launch_entry for main.py.
mg_launch() {
    mg_launch_entry main.py "$@"
}
