"""The real client: comfy-kitchen loads our output's FP8 layers and runs them with our scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import comfy_kitchen.tensor as ck_tensor
import torch
from safetensors import safe_open

from conftest import run_cli
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint



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
    assert run_cli("calibrate", "--method", "simulate", src, out).exit_code == 0
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


def _kitchen_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, input_scale: float) -> torch.Tensor:
    QuantizedTensor, Layout = ck_tensor.QuantizedTensor, ck_tensor.TensorCoreFP8Layout
    qw = QuantizedTensor(weight, "TensorCoreFP8Layout", Layout.Params(scale=weight_scale, orig_dtype=torch.float32,
                                                                       orig_shape=tuple(weight.shape)))
    qx = QuantizedTensor.from_float(x, "TensorCoreFP8Layout", scale=torch.tensor(input_scale, dtype=torch.float32))
    return torch.nn.functional.linear(qx, qw)


@pytest.mark.parametrize("arch,flavour,args", [
    ("flux", "comfy", []), ("sd3", "comfy", ["--preset", "sd3"]), ("wan", "legacy", []),
    ("wan", "legacy", ["--target", "comfy", "--preset", "wan"]), ("flux", "plain", []),
    ("flux", "plain", ["--target", "legacy"]), ("t5", "comfy", []),
])
def test_every_flavour_runs_through_comfy_kitchen_as_comfyui_loads_it(tmp_path: Path, arch: str, flavour: str,
                                                                       args: list[str]) -> None:
    from architectures import build_model
    from comfy_loader import load_like_comfyui

    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), build_model(arch, flavour, weight_only=True, input_scale=1.0 if flavour != "plain" else None))
    assert run_cli("calibrate", "--method", "simulate", *args, src, out).exit_code == 0
    g = torch.Generator().manual_seed(5)
    ran = 0
    # Text encoders run weight-only in ComfyUI; their scales are for other runtimes: run them too.
    for name, layer in load_like_comfyui(out).items():
        if not layer.fp8_matmul:
            continue
        weight = layer.weight.float() * layer.weight_scale
        x = torch.randn(16, weight.shape[1], generator=g)
        x = x / x.abs().max() * 448 * layer.input_scale * 0.9  # activations inside the scale's range
        y = _kitchen_linear(x, layer.weight, layer.weight_scale, layer.input_scale)
        ref = torch.nn.functional.linear(x, weight)
        assert float((y.float() - ref).norm() / ref.norm()) <= 0.08, name
        ran += 1
    assert ran > 0
