"""The real client: comfy-kitchen loads our output's FP8 layers and runs them with our scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import run_cli
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint

ck_tensor = pytest.importorskip("comfy_kitchen.tensor")


def fp8_linear_through_comfy_kitchen(x: torch.Tensor, f, layer: str) -> torch.Tensor:
    """What ComfyUI's fast FP8 path does: quantize x with input_scale, FP8 matmul with weight_scale."""
    QuantizedTensor, Layout = ck_tensor.QuantizedTensor, ck_tensor.TensorCoreFP8Layout
    weight = f.get_tensor(f"{layer}.weight")
    assert weight.dtype == torch.float8_e4m3fn
    w_scale = f.get_tensor(f"{layer}.weight_scale")
    in_scale = f.get_tensor(f"{layer}.input_scale")
    assert in_scale.dtype == torch.float32 and in_scale.shape == ()
    qw = QuantizedTensor(weight, "TensorCoreFP8Layout", Layout.Params(scale=w_scale, orig_dtype=torch.float32,
                                                                       orig_shape=tuple(weight.shape)))
    qx = QuantizedTensor.from_float(x, "TensorCoreFP8Layout", scale=in_scale)
    return torch.nn.functional.linear(qx, qw)


def test_output_runs_through_comfy_kitchen_fp8_linear(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    weights = {"proj": torch.randn(64, 128, generator=g) / 128**0.5, "mlp": torch.randn(256, 64, generator=g) / 8}
    tensors = []
    for name, w in weights.items():
        tensors += comfy_fp8_linear(name, w, input_scale=1.0, weight_only=True)
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), tensors)
    assert run_cli("calibrate", src, out).exit_code == 0
    with safe_open(str(out), "pt") as f:
        for layer in weights:
            scale = float(f.get_tensor(f"{layer}.input_scale"))
            weight = f.get_tensor(f"{layer}.weight").float() * f.get_tensor(f"{layer}.weight_scale")
            # An activation inside the scale's range: |x| up to 448 * scale.
            x = torch.randn(32, weight.shape[1], generator=g)
            x = x / x.abs().max() * 448 * scale * 0.9
            y = fp8_linear_through_comfy_kitchen(x, f, layer)
            ref = torch.nn.functional.linear(x, weight)
            rel = float((y.float() - ref).norm() / ref.norm())
            assert rel <= 0.08, (layer, rel)
