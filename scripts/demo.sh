#!/usr/bin/env bash
# Set up, build the small built-in example (a 2-block Flux-style FP8 checkpoint written the way
# Comfy-Org's exporter writes them: weight-only, input_scale = 1.0), calibrate it, show the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py="${FP8STREAM_VENV:-.venv}/bin/python"
mkdir -p demo-out
"$py" -c "from fp8stream.synthetic.example import write_example; write_example('demo-out/example-fp8.safetensors')"
"$py" -m fp8stream inspect demo-out/example-fp8.safetensors
"$py" -m fp8stream calibrate --force demo-out/example-fp8.safetensors demo-out/example-fp8-calibrated.safetensors
"$py" -m fp8stream inspect demo-out/example-fp8-calibrated.safetensors | tail -n 3
