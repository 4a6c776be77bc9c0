#!/usr/bin/env bash
# Run the test suite. Creates .venv and installs requirements.txt into it on first use;
# PYTHON=/path/to/python skips that and uses the given interpreter. Extra args go to pytest.
# Fashion-MNIST tests read Debian's dataset-fashion-mnist files: as root the package is
# installed when missing; otherwise those tests fail and say how to get the files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [[ ! -f "$FASHION" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian's dataset-fashion-mnist (the Fashion-MNIST files the tests read)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
"$PYTHON" -m pytest -q tests "$@"
