#!/usr/bin/env bash
# Set up (the `demo` extra), then show why the tool exists: the tiny trained DiT of the quality
# harness as a ComfyUI FP8 checkpoint with placeholder scales (input_scale = 1.0, as shipped),
# calibrated with `fp8stream calibrate`, sampled in full precision, in FP8 at 1.0 and in FP8
# at fp8stream's scales: one PNG, a row each with its SQNR (fp8stream/harness/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
py="${FP8STREAM_VENV:-.venv}/bin/python"
HF_HUB_OFFLINE=1 "$py" -m fp8stream.harness.demo demo-out
