# Sourced by demo.sh and test.sh: sets PYTHON to an interpreter with requirements.txt installed.
# With PYTHON already set, trust it; otherwise create .venv (once) and install into it.
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "creating .venv and installing requirements.txt (first run only, about a minute)" >&2
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  PYTHON=.venv/bin/python
fi
export PYTHON
