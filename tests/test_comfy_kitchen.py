"""The real client: comfy-kitchen loads our output's FP8 layers and runs them with our scale."""

from __future__ import annotations

import json
from pathlib import Path

import comfy_kitchen.tensor as ck_tensor
import pytest
import torch

from conftest import run_cli
from fp8stream.synthetic.checkpoint import write_checkpoint

# FP8 e4m3 keeps 3 mantissa bits: quantizing a layer's input costs about 2^-5 of its output's
# norm (1-3 % measured on the tiny DiT); a scale that clips the real activations costs far more.
KITCHEN_TOLERANCE = 0.04


def test_default_scales_run_the_real_activations_through_comfy_kitchen(tmp_path: Path) -> None:
    """The trained tiny DiT calibrated by the default method: every FP8-matmul layer, run through
    comfy-kitchen with the file's scale on the activations the model really sees (a sampling run
    with other noise than the calibration's), stays within FP8's own error of full precision."""
    from comfy_loader import load_like_comfyui
    from fp8stream.harness.dit import load, model_dir, record_by_comfy_name, sample, write_fp8

    tf = load(model_dir("flux"))
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_fp8(tf, src)
    assert run_cli("calibrate", src, out).exit_code == 0
    seen = record_by_comfy_name(tf, lambda: sample(tf, 4, 6, seed=7))
    errors, clipped_errors = {}, {}
    for name, layer in load_like_comfyui(out).items():
        if not layer.fp8_matmul:  # weight-only: ComfyUI runs it in full precision
            continue
        x = seen.inputs[name]
        ref = torch.nn.functional.linear(x, layer.weight.float() * layer.weight_scale)
        for scale, into in ((layer.input_scale, errors), (layer.input_scale / 8, clipped_errors)):
            y = _kitchen_linear(x, layer.weight, layer.weight_scale, scale)
            into[name] = float((y.float() - ref).norm() / ref.norm())
    assert len(errors) >= 20, sorted(errors)
    assert max(errors.values()) <= KITCHEN_TOLERANCE, errors
    # the tolerance tells a right scale from a wrong one: an eighth of it clips, and most layers fail
    assert sum(e > KITCHEN_TOLERANCE for e in clipped_errors.values()) > len(errors) // 2, clipped_errors


def _kitchen_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                    input_scale: float) -> torch.Tensor:
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
    write_checkpoint(str(src),
                     build_model(arch, flavour, weight_only=True, input_scale=1.0 if flavour != "plain" else None))
    result = run_cli("calibrate", "--method", "simulate", "--json", *args, src, out)
    assert result.exit_code == 0, result.output
    reported = {layer["name"]: layer["scale"] for layer in json.loads(result.stdout)["layers"]}
    g = torch.Generator().manual_seed(5)
    ran = 0
    # Text encoders run weight-only in ComfyUI; their scales are for other runtimes: run them too.
    for name, layer in load_like_comfyui(out).items():
        if not layer.fp8_matmul:
            continue
        # The scale ComfyUI hands the layer is the one we wrote (legacy's conversion drops a 1.0:
        # a scale lost on the way would leave ComfyUI's 1.0 here).
        assert layer.stored_input_scale == pytest.approx(reported[name], rel=1e-6), name
        # An input that does not depend on the scale: comfy-kitchen accepts the file's tensors and
        # computes ComfyUI's documented FP8 matmul with the file's scale, clamp included.
        x = torch.randn(16, layer.weight.shape[1], generator=g) * 4
        s = layer.input_scale
        expected = torch.nn.functional.linear((x / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s,
                                              layer.weight.float() * layer.weight_scale)
        y = _kitchen_linear(x, layer.weight, layer.weight_scale, s)
        assert torch.allclose(y.float(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), name
        ran += 1
    assert ran > 0
