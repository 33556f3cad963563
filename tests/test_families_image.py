"""Image families from the CLI: a tiny random model built with diffusers' class, written under
ComfyUI's names (model.diffusion_model. prefix, comfy FP8), calibrated by the default method;
every FP8 linear gets its scale from the forward pass (or is the conditioning path kept
weight-only), none from a guess, and the report names the family."""

from __future__ import annotations

import json

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest

import families_tiny as ftiny  # noqa: E402
import forward_tiny as ft  # noqa: E402
from conftest import run_cli  # noqa: E402

FORWARD_ARGS = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8",
                "--forward-threads", "1", "--json", "--no-progress"]
CASES = [("flux2", {}, "flux2"), ("flux2", {"guidance": True}, "flux2"), ("chroma", {}, "chroma"),
         ("qwen-image", {}, "qwen-image"),
         ("z-image", {}, "z-image"),
         ("lumina2", {}, "lumina2"), ("hidream", {}, "hidream")]


@pytest.mark.parametrize("family,kw,detected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cli_scales_every_layer_from_the_forward_pass(family, kw, detected, tmp_path):
    src = tmp_path / "in.safetensors"
    _, state, _ = ftiny.tiny(family, **kw)
    layers = ftiny.write(state, src)
    p = run_cli("calibrate", src, tmp_path / "out.safetensors", *FORWARD_ARGS)
    assert p.exit_code == 0, p.output[-2000:]
    report = json.loads(p.stdout)
    assert report["family"]["family"] == detected
    got = {r["name"]: r for r in report["layers"]}
    kept = {r["name"]: r for r in report["excluded"]}
    assert sorted([*got, *kept]) == sorted(layers)
    assert len(kept) <= len(layers) // 4
    assert all("conditioning path" in json.dumps(r) for r in kept.values()), kept
    for r in got.values():
        assert r["assumption"].startswith(f"{family} forward amax"), r
        assert not any("not reached" in w or "ASSUMED" in w for w in r["warnings"]), r


def test_presets_and_gated_ffn_groups(tmp_path):
    """--preset auto keeps the family's embedders and final projection weight-only; Lumina 2's
    gate and up projections (w1, w3: one input) share one scale."""
    src = tmp_path / "in.safetensors"
    _, state, _ = ftiny.tiny("lumina2")
    ft.write(state, src, "model.diffusion_model.")
    p = run_cli("calibrate", src, tmp_path / "out.safetensors", *FORWARD_ARGS, "--preset", "auto")
    assert p.exit_code == 0, p.output[-2000:]
    report = json.loads(p.stdout)
    preset = {r["name"].split(".", 2)[2] for r in report["excluded"] if "preset lumina2" in r["reason"]}
    assert preset == {"x_embedder", "t_embedder.mlp.0", "t_embedder.mlp.2", "cap_embedder.1",
                      "final_layer.linear", "final_layer.adaLN_modulation.1"}
    scale = {r["name"]: r["scale"] for r in report["layers"]}
    w1, w3 = (scale[f"model.diffusion_model.layers.0.feed_forward.{w}"] for w in ("w1", "w3"))
    assert w1 == w3


@pytest.mark.parametrize("arch", ["flux2", "chroma", "qwen-image", "z-image", "lumina2", "hidream"])
def test_full_width_inventory_maps_completely(arch):
    """The real-size inventory of scripts/bench.py (full width, 1 block deep): recognised, sized
    from its shapes, every tensor mapped onto diffusers' model, every FP8 linear reached."""
    from fp8stream.families import inventory
    from fp8stream.io.header import Header, TensorInfo
    from fp8stream.methods.forward.forward_pass import prepare
    from fp8stream.synthetic.checkpoint import from_inventory

    tensors = from_inventory(inventory(arch)(1))
    header = Header([TensorInfo(t.name, t.dtype, t.shape, 0, t.nbytes) for t in tensors], None, 0)
    prepared = prepare(header)
    assert prepared.reason is None and prepared.detection.family == arch
    fp8 = {t.name for t in tensors if t.dtype == "F8_E4M3"}
    assert fp8 and fp8 <= prepared.reached


def test_a_layer_no_input_reached_is_kept_weight_only_not_guessed(tmp_path, monkeypatch):
    """An MoE expert that no synthetic token was routed to sees no input in the pass: its bound
    would rest on an assumed model input, so it is kept weight-only with the reason, never
    scaled from the ASSUMED guess (the full-width HiDream inventory has three such experts)."""
    import fp8stream.methods.forward.forward_pass as forward_run

    src = tmp_path / "in.safetensors"
    _, state, _ = ftiny.tiny("hidream")
    layers = ftiny.write(state, src)
    expert = next(n for n in layers if ".experts.0.w1" in n)
    real_run = forward_run.run

    def run_without_the_expert(*args, **kwargs):
        result = real_run(*args, **kwargs)
        result.amax.pop(expert + ".weight")  # as if no token had been routed to it
        return result

    monkeypatch.setattr(forward_run, "run", run_without_the_expert)
    p = run_cli("calibrate", src, tmp_path / "out.safetensors", *FORWARD_ARGS)
    assert p.exit_code == 0, p.output[-2000:]
    report = json.loads(p.stdout)
    kept = {r["name"]: json.dumps(r) for r in report["excluded"]}
    assert expert in kept and "no input reached it in the forward pass" in kept[expert]
    assert not any("ASSUMED" in w for r in report["layers"] for w in r["warnings"])
