"""`fp8stream calibrate` end to end: what a user would check of the output file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import run_cli, small_model_tensors, subprocess_env
from fp8stream.formats.comfy_quant import FLAG_BYTES
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint

LAYERS = ["blocks.0.attn.qkv", "blocks.0.mlp.0", "blocks.0.mlp.2"]


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_every_fp8_layer_gets_a_positive_f32_scalar_scale(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", "--method", "simulate", small_model, out)
    assert result.exit_code == 0, result.output
    tensors, _ = load(out)
    for layer in LAYERS:
        scale = tensors[f"{layer}.input_scale"]
        assert scale.dtype == torch.float32 and scale.shape == ()
        assert math.isfinite(float(scale)) and float(scale) > 0


def test_passthrough_tensors_are_byte_identical(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", small_model, out).exit_code == 0
    before, _ = load(small_model)
    after, _ = load(out)
    for name, t in before.items():
        if name.endswith(".comfy_quant"):
            continue
        assert torch.equal(t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t,
                           after[name].view(torch.uint8) if t.dtype == torch.float8_e4m3fn else after[name]), name
    assert set(after) == set(before) | {f"{layer}.input_scale" for layer in LAYERS}


def test_metadata_is_preserved_and_describes_the_run_without_paths(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", "--seed", "7", small_model, out).exit_code == 0
    _, metadata = load(out)
    assert metadata["modelspec.title"] == "tiny"
    calibration = json.loads(metadata["fp8stream.calibration"])
    assert calibration["method"] == "simulate" and calibration["seed"] == 7
    assert str(tmp_path) not in json.dumps(metadata)


def test_placeholders_are_replaced_and_real_scales_kept(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = comfy_fp8_linear("a", torch.randn(16, 16, generator=g), input_scale=1.0)
    tensors += comfy_fp8_linear("b", torch.randn(16, 16, generator=g), input_scale=0.0421)
    tensors += comfy_fp8_linear("c", torch.randn(16, 16, generator=g))
    tensors += comfy_fp8_linear("d", torch.randn(16, 16, generator=g))
    # d's input scale equals its own weight_scale: a converter's placeholder
    d_ws = [t for t in tensors if t.name == "d.weight_scale"][0]
    from fp8stream.synthetic.checkpoint import f32_scalar
    tensors.append(f32_scalar("d.input_scale", float(torch.frombuffer(bytearray(d_ws.data), dtype=torch.float32))))
    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), tensors)
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", "--method", "simulate", "--json", src, out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip())
    by_name = {layer["name"]: layer for layer in report["layers"]}
    assert by_name["a"]["source"] == "replaced" and "1.0" in by_name["a"]["why"]
    assert by_name["b"]["source"] == "kept"
    assert by_name["c"]["source"] == "new"
    assert by_name["d"]["source"] == "replaced" and "weight_scale" in by_name["d"]["why"]
    after, _ = load(out)
    assert float(after["b.input_scale"]) == pytest.approx(0.0421)
    assert float(after["a.input_scale"]) != 1.0
    # --overwrite-scales replaces the real one too
    out2 = tmp_path / "out2.safetensors"
    result = run_cli("calibrate", "--method", "simulate", "--json", "--overwrite-scales", src, out2)
    assert {layer["name"]: layer["source"] for layer in json.loads(result.stdout)["layers"]}["b"] == "replaced"


def test_weight_only_flag_is_removed_in_the_markers_room(tmp_path: Path) -> None:
    """The marker's size comes from the header alone (which cannot tell whether the input's marker
    holds the flag): its input size plus room for the flag, space padded, whatever is written."""
    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), small_model_tensors(input_scale=1.0, weight_only=True))
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", src, out).exit_code == 0
    before, _ = load(src)
    after, _ = load(out)
    for layer in LAYERS:
        raw_in, raw_out = before[f"{layer}.comfy_quant"], after[f"{layer}.comfy_quant"]
        assert raw_out.shape[0] == raw_in.shape[0] + FLAG_BYTES
        assert bytes(raw_out.tolist()).endswith(b" " * FLAG_BYTES)
        assert json.loads(bytes(raw_out.tolist())) == {"format": "float8_e4m3fn"}
        assert float(after[f"{layer}.input_scale"]) != 1.0
    kept = tmp_path / "kept.safetensors"
    result = run_cli("calibrate", "--method", "simulate", "--keep-weight-only", "--json", src, kept)
    after, _ = load(kept)
    assert json.loads(bytes(after["blocks.0.mlp.0.comfy_quant"].tolist()))["full_precision_matrix_mult"] is True
    assert all(not layer["fp8_activations"] for layer in json.loads(result.stdout)["layers"])


def test_same_input_and_seed_give_identical_bytes_whatever_the_paths(small_model: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    a, b, c = tmp_path / "a.safetensors", tmp_path / "x" / "b.safetensors", tmp_path / "c.safetensors"
    assert run_cli("calibrate", "--method", "simulate", small_model, a).exit_code == 0
    assert run_cli("calibrate", "--method", "simulate", small_model, b).exit_code == 0
    assert run_cli("calibrate", "--method", "simulate", "--seed", "1", small_model, c).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_scales_come_after_all_data_in_layer_order(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", small_model, out).exit_code == 0
    from fp8stream.io.reader import LazyFile

    with LazyFile(str(out)) as f:
        names = [t.name for t in f.header.tensors]
    assert names[-3:] == [f"{layer}.input_scale" for layer in LAYERS]


def test_output_gets_ordinary_permissions(small_model: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        out = tmp_path / "out.safetensors"
        assert run_cli("calibrate", "--method", "simulate", small_model, out).exit_code == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o640


def test_dry_run_writes_nothing(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", "--method", "simulate", "--dry-run", "--json", small_model, out)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["status"] == "dry-run" and len(report["layers"]) == 3
    assert not out.exists()
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_json_report_is_one_line_per_file(small_model: Path, tmp_path: Path) -> None:
    result = run_cli("calibrate", "--method", "simulate", "--json", small_model, tmp_path / "out.safetensors")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["status"] == "ok" and doc["layers_calibrated"] == 3 and doc["error"] is None


def test_table_report_goes_to_stderr(small_model: Path, tmp_path: Path) -> None:
    result = run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "out.safetensors")
    assert result.stdout == ""
    assert "blocks.0.mlp.{0,2}" in result.stderr and "3 scales calibrated" in result.stderr


def test_inspect_reports_layers_and_dtypes(small_model: Path) -> None:
    result = run_cli("inspect", "--json", small_model)
    info = json.loads(result.stdout)
    assert [layer["name"] for layer in info["fp8_layers"]] == LAYERS
    assert info["dtypes"]["F8_E4M3"]["tensors"] == 3
    text = run_cli("inspect", small_model).stdout
    assert "3 FP8 layers: 3 with FP8 activations, 0 weight-only; 0 with an input_scale" in text


def test_inspect_to_a_reader_that_left_is_one_line_and_exit_1(small_model: Path) -> None:
    """`fp8stream inspect FILE --json | true`: the pipe's reader is gone when the JSON is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "fp8stream", "inspect", str(small_model), "--json"],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    finally:
        os.close(write_end)
    assert r.returncode == 1 and r.stderr.splitlines() == ["fp8stream: error: the reading end of the pipe closed"]


def test_skipped_formats_are_reported_and_passed_through(tmp_path: Path) -> None:
    from fp8stream.synthetic.checkpoint import SyntheticTensor

    tensors = comfy_fp8_linear("lin", torch.randn(8, 8))
    tensors.append(SyntheticTensor("conv.weight", "F8_E4M3", (4, 2, 3, 3), bytes(72)))
    tensors.append(SyntheticTensor("e5.weight", "F8_E5M2", (4, 4), bytes(16)))
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), tensors)
    result = run_cli("calibrate", "--method", "simulate", "--json", src, out)
    report = json.loads(result.stdout)
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert "convolution" in reasons["conv"] and "F8_E5M2" in reasons["e5"]
    before, _ = load(src)
    after, _ = load(out)
    assert torch.equal(before["conv.weight"].view(torch.uint8), after["conv.weight"].view(torch.uint8))
