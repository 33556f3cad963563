#!/usr/bin/env bash
# Set up (scripts/setup.sh test), lint (ruff, configured in pyproject.toml), then run the test suite;
# arguments go to pytest. A lint finding fails the command before any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
venv="${FP8STREAM_VENV:-.venv}"
"$venv/bin/python" -m ruff check --quiet fp8stream tests scripts
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
