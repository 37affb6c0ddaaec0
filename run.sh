#!/usr/bin/env bash
# One entry point: sets up what is missing (a virtual environment, torch==2.13.0 first, on its own, so that
# TORCH_INDEX_URL can pick its build; then requirements and the project), then runs the command.
#   ./run.sh demo [--out DIR]     the demo on the embedded sample
#   ./run.sh test [pytest args]   the test suite
#   ./run.sh fewshot <args>       any FewShotSeg command, e.g. ./run.sh fewshot demo
#   ./run.sh <python -m InteractiveRefineLib args>   any core command, e.g. ./run.sh train --help
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ADAPTIVESEG_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.adaptiveseg-setup"
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "[setup] installing torch==$TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    # the configured index gives the CPU build on this project's machines; on plain PyPI (Linux) it would be
    # the CUDA build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ./run.sh ... asks for the CPU one
    "$PY" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
    rm -f "$stamp"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] \
        || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing requirements and the project (editable)"
    "$PY" -m pip install --quiet -r requirements.txt -r requirements-dev.txt
    "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
        || "$PY" -m pip install --quiet --no-deps -e .
    touch "$stamp"
fi

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    demo) exec "$PY" -m InteractiveRefineLib demo "$@" ;;
    test) exec "$PY" -m pytest "$@" ;;
    fewshot) exec "$PY" -m FewShotSegLib "$@" ;;
    "") echo "usage: ./run.sh demo|test|fewshot <command>|<InteractiveRefineLib command> [args]" >&2; exit 2 ;;
    *) exec "$PY" -m InteractiveRefineLib "$cmd" "$@" ;;
esac
