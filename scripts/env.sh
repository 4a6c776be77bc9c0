# Sourced by every script: sets PYTHON to an interpreter with requirements.txt installed.
# With PYTHON already set, trust it. Otherwise use the repository's .venv: create it on first
# use and (re)install requirements.txt only when that file changed since the last install, so
# the experiment scripts can source this on every call without reinstalling anything.
# DRY_RUN=1: the scripts only print their command, so nothing is created or installed; PYTHON is
# then the .venv interpreter's path, as a real run would use.
# OMP_WAIT_POLICY is left as given: unset, each entry point chooses it for the machine as it starts
# (training/wait_policy.py).
_MG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ] && [ "${DRY_RUN:-0}" = "1" ]; then
  PYTHON="$_MG_ROOT/.venv/bin/python"
elif [ -z "${PYTHON:-}" ]; then
  if [ ! -x "$_MG_ROOT/.venv/bin/python" ]; then
    # Measured 2026-12-07 on the 2-core development machine: 100 s and 1,101 s (user + sys CPU 91 s of it):
    # the time is pip downloading torch's ~6 GB of CUDA wheels, so it is the network's, not the CPU's.
    echo "creating .venv and installing requirements.txt (first run only: 2 to 20 minutes, mostly downloading" \
         "about 6 GB for torch)" >&2
    python3 -m venv "$_MG_ROOT/.venv"
  fi
  _mg_stamp="$_MG_ROOT/.venv/.requirements.sha256"
  _mg_wanted="$(sha256sum "$_MG_ROOT/requirements.txt" | cut -d' ' -f1)"
  if [ "$(cat "$_mg_stamp" 2>/dev/null)" != "$_mg_wanted" ]; then
    echo "installing requirements.txt into .venv" >&2
    "$_MG_ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$_MG_ROOT/requirements.txt"
    echo "$_mg_wanted" > "$_mg_stamp"
  fi
  PYTHON="$_MG_ROOT/.venv/bin/python"
fi
export PYTHON
