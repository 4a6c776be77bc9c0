# Sourced by the GPU scripts from the repository root: PYTHON (scripts/env.sh), FASHION_PATH (default
# /usr/share/datasets/fashion-mnist, or data/fashion-mnist in this tree when that is absent) and
# require_cuda NAME, which stops the script with exit 2 and one sentence where torch sees no GPU.
source scripts/env.sh
FASHION_PATH="${FASHION_PATH:-/usr/share/datasets/fashion-mnist}"
[[ -d "data/fashion-mnist" && ! -d "$FASHION_PATH" ]] && FASHION_PATH="$(pwd)/data/fashion-mnist"
require_cuda() {
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "$1: torch sees no CUDA device here; run it on a machine with a GPU" >&2
        exit 2
    fi
}
