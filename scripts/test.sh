#!/usr/bin/env bash
# Set up (scripts/setup.sh test) and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec "${FP8STREAM_VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
