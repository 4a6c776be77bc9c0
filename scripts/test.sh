#!/usr/bin/env bash
# Run the test suite. Creates .venv and installs requirements.txt into it on first use;
# PYTHON=/path/to/python skips that and uses the given interpreter. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
"$PYTHON" -m pytest -q tests "$@"
