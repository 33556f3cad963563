"""The output checked without trusting the writer: `calibrate --verify`, `fp8stream verify`,
written scales read back, and suspicious weights reported."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

import fp8stream.pipeline.run
import fp8stream.rewrite
from conftest import run_cli, run_subprocess, small_model_tensors
from fp8stream.io.reader import LazyFile
from fp8stream.synthetic.checkpoint import SyntheticTensor, comfy_fp8_linear, f32_scalar, write_checkpoint


def calibrated(small_model: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", small_model, out).exit_code == 0
    return out


def flip_byte_of(path: Path, tensor: str) -> None:
    with LazyFile(str(path)) as f:
        offset = f.header.data_start + f.header.by_name[tensor].begin
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_calibrate_verify_reports_identical_passthrough(tmp_path: Path) -> None:
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), small_model_tensors(input_scale=1.0, weight_only=True))
    result = run_cli("calibrate", "--method", "simulate", "--verify", "--json", src, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["verify"]
    # identical: 3 weights, 3 weight scales, 3 biases, norm, embed; expected: 3 markers, 3 scales, 2 metadata keys
    assert summary.startswith("11 tensors identical, 8 expected differences, 0 unexpected"), summary


def test_calibrate_verify_catches_a_writer_that_corrupts_passthrough(small_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    original = fp8stream.pipeline.run.StreamingWriter.write

    def corrupting_write(self, name: str, data) -> None:
        if name == "embed.weight":
            data = bytes([data[0] ^ 1]) + bytes(data[1:])
        original(self, name, data)

    monkeypatch.setattr(fp8stream.pipeline.run.StreamingWriter, "write", corrupting_write)
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", "--method", "simulate", "--verify", small_model, out)
    assert result.exit_code == 1
    assert "embed.weight: bytes differ" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # nothing written, no temp left


def test_every_written_scale_is_read_back(small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp8stream.pipeline.run, "f32_bytes", lambda value: struct.pack("<f", float("nan")))
    result = run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "out.safetensors")
    assert result.exit_code == 1 and "failed its check" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_verify_command_accepts_a_calibrated_file(small_model: Path, tmp_path: Path) -> None:
    out = calibrated(small_model, tmp_path)
    result = run_cli("verify", small_model, out)
    assert result.exit_code == 0
    assert "scale added" in result.stdout and "0 unexpected" in result.stdout
    doc = json.loads(run_cli("verify", "--json", small_model, out).stdout)
    # the 3 markers keep their JSON (no weight-only flag to remove) in room for the flag (padded)
    assert doc["ok"] and doc["identical"] == 11
    markers = [d for d in doc["differences"] if d["name"].endswith("comfy_quant")]
    assert len(markers) == 3
    assert {(d["detail"], d["expected"]) for d in markers} == {("marker re-encoded, same JSON", True)}


def test_verify_command_reports_each_unexpected_difference(small_model: Path, tmp_path: Path) -> None:
    out = calibrated(small_model, tmp_path)
    flip_byte_of(out, "embed.weight")
    flip_byte_of(out, "blocks.0.mlp.0.weight")
    r = run_cli("verify", small_model, out)
    assert r.exit_code == 1
    assert "UNEXPECTED  embed.weight: bytes differ" in r.stdout
    assert "UNEXPECTED  blocks.0.mlp.0.weight: bytes differ" in r.stdout
    assert r.stderr.strip().splitlines() == [f"fp8stream: error: {out} differs from {small_model} where it must not "
                                             "(2 unexpected differences)"]


def test_verify_command_on_unrelated_files(small_model: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    write_checkpoint(str(other), [f32_scalar("embed.weight", 1.0), f32_scalar("x.input_scale", -1.0)],
                     metadata={"modelspec.title": "other"})
    doc = json.loads(run_cli("verify", "--json", small_model, other).stdout)
    details = {d["name"]: (d["detail"], d["expected"]) for d in doc["differences"]}
    assert details["blocks.0.mlp.0.weight"] == ("missing from the output", False)
    assert details["embed.weight"][0].startswith("BF16[32, 16] became F32[]")
    assert details["x.input_scale"] == ("scale -1.0 is not a finite, positive F32 scalar", False)
    assert details["__metadata__[modelspec.title]"] == ("changed", False)
    assert not doc["ok"]


def test_verify_command_refuses_a_broken_file_cleanly(small_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(small_model.read_bytes()[:100])
    r = run_subprocess("verify", small_model, bad)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_suspicious_weights_are_reported(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = comfy_fp8_linear("ok", torch.randn(8, 8, generator=g))
    tensors += [SyntheticTensor("nan.weight", "F8_E4M3", (2, 4), b"\x38\x7f\x30\xff\x38\x38\x38\x38"),
                f32_scalar("nan.weight_scale", 0.1)]
    tensors += [SyntheticTensor("zero.weight", "F8_E4M3", (2, 4), b"\x00\x80" * 4),
                f32_scalar("zero.weight_scale", 0.1)]
    tensors += [SyntheticTensor("neg.weight", "F8_E4M3", (2, 4), b"\x38" * 8), f32_scalar("neg.weight_scale", -0.5)]
    tensors += [SyntheticTensor("inf.weight", "F8_E4M3", (2, 4), b"\x38" * 8),
                f32_scalar("inf.weight_scale", float("inf")), f32_scalar("inf.input_scale", float("nan"))]
    for name in ("nan", "zero", "neg", "inf"):
        tensors.append([t for t in comfy_fp8_linear(name, (2, 4)) if t.name.endswith("comfy_quant")][0])
    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), tensors)
    result = run_cli("calibrate", "--method", "simulate", "--json", src, tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.output
    warnings = {layer["name"]: layer["warnings"] for layer in json.loads(result.stdout)["layers"]}
    assert not [w for w in warnings["ok"] if w.startswith(("FP8 weight", "weight_scale", "existing input_scale"))]
    assert "FP8 weight holds 2 NaN values (of 8)" in warnings["nan"]
    assert "FP8 weight is all zero" in warnings["zero"]
    assert "weight_scale is negative (-0.5)" in warnings["neg"]
    assert "weight_scale is inf" in warnings["inf"]
    assert "existing input_scale is nan: not positive and finite" in warnings["inf"]
    table = run_cli("calibrate", "--method", "simulate", src, tmp_path / "out2.safetensors").stderr
    assert "warning: FP8 weight is all zero" in table


@pytest.mark.parametrize("target", ["comfy", "legacy"])
def test_flavour_conversions_verify_as_expected_differences(tmp_path: Path, target: str) -> None:
    from fp8stream.synthetic.checkpoint import legacy_fp8_linear, legacy_marker, plain_fp8_linear

    g = torch.Generator().manual_seed(2)
    tensors = legacy_fp8_linear("a", torch.randn(16, 16, generator=g), input_scale=1.0) + [legacy_marker()]
    if target == "legacy":
        tensors += plain_fp8_linear("b", torch.randn(16, 16, generator=g))
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), tensors)
    result = run_cli("calibrate", "--method", "simulate", "--verify", "--json", "--target", target, src, out)
    assert result.exit_code == 0, result.output
    doc = json.loads(run_cli("verify", "--json", src, out).stdout)
    assert doc["ok"], doc
    details = {d["name"]: d["detail"] for d in doc["differences"]}
    if target == "comfy":
        assert details["a.weight_scale"] == "renamed from a.scale_weight"
        assert details["a.comfy_quant"].startswith("marker added")
        assert details["scaled_fp8"].startswith("legacy marker dropped")
    else:
        assert details["b.scale_weight"].startswith("unit weight scale added")


def test_verify_reads_zstd_outputs_back(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors.zst"
    result = run_cli("calibrate", "--method", "simulate", "--verify", "--json", small_model, out)
    assert result.exit_code == 0, result.output
    assert "0 unexpected" in json.loads(result.stdout)["verify"]
    assert json.loads(run_cli("verify", "--json", small_model, out).stdout)["ok"]
