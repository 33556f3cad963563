"""`--dry-run` plans exactly what the real run would do (issue 10 item 7, issue 22 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from architectures import build_model
from conftest import run_cli
from format_variants import FORWARD_ARGS, comfy_model
from fp8stream.synthetic.checkpoint import SyntheticTensor, write_checkpoint

REAL = "blocks.1.ffn.0"  # alone in its group: its real scale is kept whatever the others get


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def mixed_model(path: Path) -> None:
    """Placeholders (1.0) everywhere but one real scale; weight-only markers set."""
    tensors = []
    for t in build_model("wan", "comfy", weight_only=False, input_scale=1.0):
        if t.name == f"{REAL}.input_scale":
            t = SyntheticTensor(t.name, t.dtype, t.shape, np.float32(0.0123).tobytes())
        tensors.append(t)
    write_checkpoint(str(path), tensors)


def test_dry_run_refuses_an_existing_output_like_the_real_run(tmp_path: Path) -> None:
    model, out = tmp_path / "m.safetensors", tmp_path / "out.safetensors"
    mixed_model(model)
    out.write_bytes(b"keep me")
    dry = run_cli("calibrate", "--dry-run", model, out)
    real = run_cli("calibrate", model, out)
    assert dry.exit_code == real.exit_code == 2
    assert dry.stderr == real.stderr and "--force" in dry.stderr
    assert out.read_bytes() == b"keep me"
    assert run_cli("calibrate", "--dry-run", "--force", model, out).exit_code == 0
    assert out.read_bytes() == b"keep me"  # a dry run writes nothing


def test_dry_run_says_kept_and_replaced_as_the_real_run_does(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    mixed_model(model)
    dry = run_cli("calibrate", "--dry-run", "--json", model)
    real = run_cli("calibrate", "--json", model, tmp_path / "out.safetensors")
    assert dry.exit_code == real.exit_code == 0, dry.stderr
    planned, done = _strict(dry.stdout), _strict(real.stdout)
    assert planned["status"] == "dry-run"
    by_name = {layer["name"]: layer for layer in done["layers"]}
    assert [layer["name"] for layer in planned["layers"]] == list(by_name)
    for layer in planned["layers"]:
        after = by_name[layer["name"]]
        assert layer["source"] == after["source"], layer["name"]
        assert layer["fp8_activations"] == after["fp8_activations"], layer["name"]
        if layer["source"] == "kept":
            assert layer["scale"] == after["scale"]
        else:
            assert layer["scale"] is None and "not computed" in layer["why"]
            assert layer["why"].startswith(after["why"])
    assert by_name[REAL]["source"] == "kept" and by_name["blocks.1.ffn.2"]["source"] == "replaced"
    assert planned["layers_calibrated"] == done["layers_calibrated"]
    assert planned["bytes_out"] == done["bytes_out"]


def test_dry_run_table_does_not_claim_computed_scales(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    mixed_model(model)
    result = run_cli("calibrate", "--dry-run", model)
    assert result.exit_code == 0
    summary = next(line for line in result.stderr.splitlines() if " FP8 layer" in line and "would write" in line)
    assert "scales calibrated" not in summary and "not computed" in summary
    assert "nan" not in result.stderr.lower()


# The dry run's decisions equal the run's on every family the suite builds, in every format:
# test_formats_by_family.py, beside the runs it compares with.


def test_dry_run_names_the_layers_only_the_pass_decides(tmp_path: Path) -> None:
    """HiDream's MoE routing cannot run on meta tensors: the dry run names the layers it leaves to
    the pass, and says so in a note, rather than planning them as scaled."""
    src = comfy_model("hidream", tmp_path / "hidream.safetensors")
    doc = _strict(run_cli("calibrate", "--dry-run", src, *FORWARD_ARGS).stdout)
    assert doc["undecided"] and set(doc["undecided"]) <= {layer["name"] for layer in doc["layers"]}
    assert any(f"{len(doc['undecided'])} layers undecided" in note for note in doc["notes"])


def test_dry_run_says_when_no_layer_would_be_scaled(tmp_path: Path) -> None:
    """No family known: the run writes every layer weight-only and exits 5; its dry run says so and exits 5."""
    unknown = comfy_model("unknown", tmp_path / "unknown.safetensors")
    dry = run_cli("calibrate", "--dry-run", unknown, tmp_path / "out.safetensors")
    assert dry.exit_code == 5 and "every FP8 layer kept weight-only, no scale from a guess" in dry.stderr, dry.stderr
    assert not (tmp_path / "out.safetensors").exists()
