"""What a new user trips over (issue 10): each test runs the CLI as a user would and checks what
the user sees (exit code, the one line on stderr, files left on disk)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, run_subprocess


def test_exclude_output_passes_our_own_verify(small_model: Path, tmp_path: Path) -> None:
    """--exclude sets the weight-only flag, which lengthens the marker: verify must accept it."""
    out = tmp_path / "out.safetensors"
    r = run_cli("calibrate", small_model, out, "--exclude", "*mlp.2", "--verify")
    assert r.exit_code == 0, r.output
    r = run_cli("verify", small_model, out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    marker = [d for d in doc["differences"] if d["name"] == "blocks.0.mlp.2.comfy_quant"]
    assert marker and marker[0]["expected"], doc
    assert "full_precision_matrix_mult set" in marker[0]["detail"]
