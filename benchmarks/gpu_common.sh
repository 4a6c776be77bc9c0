# Sourced first by the GPU scripts (from wherever they are called): moves to the repository root and
# sets PYTHON (scripts/env.sh) and FASHION_PATH (default /usr/share/datasets/fashion-mnist, or
# data/fashion-mnist in this tree when that is absent). Defines
#   output_dir DIR    DIR created (relative to where the script was called) and printed as an absolute path;
#   require_cuda NAME stops the script with exit 2 and one sentence where torch sees no GPU.
_GPU_CALLER_DIR="$(pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
FASHION_PATH="${FASHION_PATH:-/usr/share/datasets/fashion-mnist}"
[[ -d "data/fashion-mnist" && ! -d "$FASHION_PATH" ]] && FASHION_PATH="$(pwd)/data/fashion-mnist"
output_dir() {
    (cd "$_GPU_CALLER_DIR" && mkdir -p "$1" && cd "$1" && pwd)
}
require_cuda() {
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "$1: torch sees no CUDA device here; run it on a machine with a GPU" >&2
        exit 2
    fi
}
