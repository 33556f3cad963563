"""A file of a family we do not know: written, every FP8 layer weight-only (no guess), one line
saying so, exit code 5 and batch status `unscaled`; `--method simulate` still scales it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from conftest import run_cli
from fp8stream.synthetic.checkpoint import bf16_tensor, comfy_fp8_linear, write_checkpoint

LAYERS = ("enc.layer0", "enc.layer1")


def _unknown(path: Path) -> Path:
    tensors = [t for i, name in enumerate(LAYERS) for t in comfy_fp8_linear(name, (16, 16), seed=i)]
    write_checkpoint(str(path), tensors + [bf16_tensor("enc.norm.weight", torch.ones(16))])
    return path


def test_unknown_family_is_written_weight_only_with_exit_code_5(tmp_path: Path) -> None:
    src, out = _unknown(tmp_path / "in.safetensors"), tmp_path / "out.safetensors"
    r = run_cli("calibrate", src, out)
    assert r.exit_code == 5, r.output
    said = [line for line in r.stderr.splitlines() if "model family not recognised" in line and "note:" in line]
    assert len(said) == 1 and "--method simulate" in said[0]
    with safe_open(str(out), "pt") as f:
        assert not any(k.endswith("input_scale") for k in f.keys())
        for name in LAYERS:
            assert json.loads(bytes(f.get_tensor(name + ".comfy_quant").tolist()))["full_precision_matrix_mult"]
    r = run_cli("calibrate", src, out, "--force", "--json")
    doc = json.loads(r.stdout)
    assert (r.exit_code, doc["status"], doc["exit_code"], doc["family"], doc["layers"]) == (5, "unscaled", 5, None, [])
    r = run_cli("calibrate", src, out, "--force", "--method", "simulate", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["status"] == "ok" and len(doc["layers"]) == len(LAYERS)
    assert all(any("ASSUMED" in w for w in layer["warnings"]) for layer in doc["layers"])


def test_batch_status_unscaled_and_exit_code(tmp_path: Path) -> None:
    unknown = _unknown(tmp_path / "unknown.safetensors")
    nothing = tmp_path / "nothing.safetensors"
    write_checkpoint(str(nothing), [bf16_tensor("w", torch.ones(4))])
    r = run_cli("calibrate", unknown, nothing, "--out-dir", tmp_path / "out", "--json")
    status = {Path(d["input"]).name: d["status"] for d in map(json.loads, r.stdout.splitlines())}
    assert status == {"unknown.safetensors": "unscaled", "nothing.safetensors": "skipped"}
    assert r.exit_code == 5
    r = run_cli("calibrate", unknown, tmp_path / "missing.safetensors", "--out-dir", tmp_path / "out2", "--keep-going")
    assert r.exit_code == 4  # a failure outranks a file written unscaled


def test_real_scales_of_an_unknown_family_are_kept(tmp_path: Path) -> None:
    """No guess does not mean forgetting: a real scale already in the file stays; only the
    layers that would need a new scale are written weight-only."""
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    tensors = comfy_fp8_linear("enc.real", (16, 16), seed=0, input_scale=0.0123)
    tensors += comfy_fp8_linear("enc.placeholder", (16, 16), seed=1, input_scale=1.0)
    write_checkpoint(str(src), tensors)
    r = run_cli("calibrate", src, out, "--json")
    doc = json.loads(r.stdout)
    assert [(x["name"], x["source"]) for x in doc["layers"]] == [("enc.real", "kept")]
    assert [x["name"] for x in doc["excluded"]] == ["enc.placeholder"] and r.exit_code == 0
