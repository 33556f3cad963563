"""AuraFlow, the family added as one module (fp8stream/families/auraflow.py): what every family's
tests show. A tiny random AuraFlow built with diffusers' class, written under the original names
ComfyUI's files use (double_layers.N.attn.w2q, single_layers, modX, cond_seq_linear, ...) with FP8
weights, is detected from its header with its sizes; the streaming pass equals the eager run; the
default `calibrate` exits 0 and gives every FP8 layer its scale from the forward pass or keeps it
weight-only with the reason, none from a guess; the preset and the shared-input groups hold; the
real-size inventory (scripts/bench.py --arch auraflow) is reached whole and calibrates within the
memory bound (docs/speed.md: 2 x the largest FP8 layer as F32 + 1 GiB)."""

from __future__ import annotations

import json
import math

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest

import forward_tiny as ft  # noqa: E402
from conftest import run_cli  # noqa: E402
from fp8stream.families import inventory  # noqa: E402
from fp8stream.families.detect import detect  # noqa: E402
from test_forward import _eager_amax, _run  # noqa: E402

PREFIX = "model.diffusion_model."
SMALL = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
         "--json", "--no-progress"]
MB = 1 << 20


def _comfy_file(tmp_path):
    src = tmp_path / "auraflow.safetensors"
    _, state, _ = ft.tiny("auraflow")
    return src, ft.write(state, src, PREFIX)


def test_detected_from_the_header_with_its_sizes(tmp_path):
    src, _ = _comfy_file(tmp_path)
    family = json.loads(run_cli("inspect", "--json", src).stdout)["family"]
    assert (family["family"], family["width"], family["blocks"]) == ("auraflow", 96, [2, 2])
    assert family["summary"] == "auraflow (width 96, 2+2 blocks; key double_layers.0.attn.w2q.weight)"
    # the real model's header: 3072 wide, 4 MMDiT + 32 single blocks
    real = detect({PREFIX + s.name: s.shape for s in inventory("auraflow")(None)})
    assert (real.family, real.prefix, real.width, real.blocks) == ("auraflow", PREFIX, 3072, (4, 32))


def test_streaming_pass_equals_eager_run(tmp_path):
    """Every Linear's input amax from the streaming pass (one weight live at a time) equals an
    eager run of diffusers' AuraFlowTransformer2DModel with the dequantized weights."""
    path = tmp_path / "auraflow.safetensors"
    model, state, cfg = ft.tiny("auraflow")
    layers = ft.write(state, path)
    result = _run(path)
    assert result.family == "auraflow" and result.reason is None, result.reason
    assert result.peak_live == 1
    eager = _eager_amax("auraflow", model, state, layers, cfg)
    assert set(result.module_amax) == set(eager)
    for name, a in eager.items():
        assert result.module_amax[name] == pytest.approx(a, rel=1e-5, abs=1e-6), name
    assert sorted(n[:-7] for n in result.amax) == sorted(layers)


def _every_layer_from_the_pass(report: dict, layers: list[str]) -> None:
    """Each FP8 layer scaled from the forward pass, or kept weight-only as the conditioning path
    (its measured scale beside the flag): none excluded, none assumed, at most a quarter kept."""
    got = {r["name"]: r for r in report["layers"]}
    assert sorted(got) == sorted(layers) and report["excluded"] == []
    kept = [r for r in got.values() if not r["fp8_activations"]]
    assert kept and len(kept) <= len(layers) // 4
    assert all("conditioning path" in " ".join(r["notes"]) for r in kept), kept
    for r in got.values():
        assert r["basis"] == "forward pass" and r["assumption"].startswith("auraflow forward amax"), r
        assert not any("not reached" in w or "ASSUMED" in w for w in r["warnings"]), r


def test_calibrate_default_scales_every_fp8_layer_from_the_forward_pass(tmp_path):
    src, layers = _comfy_file(tmp_path)
    p = run_cli("calibrate", src, tmp_path / "out.safetensors", *SMALL)
    assert p.exit_code == 0, p.output[-2000:]
    report = json.loads(p.stdout)
    assert report["family"]["family"] == "auraflow"
    _every_layer_from_the_pass(report, layers)
    kept = {r["name"].removeprefix(PREFIX) for r in report["layers"] if not r["fp8_activations"]}
    # the time embedder and every modulation read one vector per sample that follows the step's time
    assert kept == {"t_embedder.mlp.0", "t_embedder.mlp.2", "modF.1", "single_layers.0.modCX.1",
                    "single_layers.1.modCX.1"} | {f"double_layers.{i}.mod{s}.1" for i in (0, 1) for s in "CX"}


def test_preset_keeps_embedders_and_final_projection_and_siblings_share_a_scale(tmp_path):
    src, layers = _comfy_file(tmp_path)
    p = run_cli("calibrate", src, tmp_path / "out.safetensors", *SMALL, "--preset", "auto")
    assert p.exit_code == 0, p.output[-2000:]
    report = json.loads(p.stdout)
    preset = {r["name"].removeprefix(PREFIX) for r in report["excluded"] if r["reason"] == "preset auraflow: "
              + ("final projection" if r["name"].endswith(("modF.1", "final_linear")) else "embedder")}
    assert preset == {"init_x_linear", "cond_seq_linear", "t_embedder.mlp.0", "t_embedder.mlp.2", "modF.1",
                      "final_linear"}
    shares = {r["name"].removeprefix(PREFIX): {n.removeprefix(PREFIX) for n in r["shares_input_with"]}
              for r in report["layers"]}
    for block, siblings in (("double_layers.0.attn.", ("w1q", "w1k", "w1v")),
                            ("double_layers.0.attn.", ("w2q", "w2k", "w2v")),
                            ("single_layers.1.attn.", ("w1q", "w1k", "w1v")),
                            ("double_layers.1.mlpC.", ("c_fc1", "c_fc2")),
                            ("single_layers.0.mlp.", ("c_fc1", "c_fc2"))):
        names = {block + s for s in siblings}
        assert all(shares[n] == names - {n} for n in names), (block, siblings)
    assert shares["double_layers.0.attn.w1o"] == shares["single_layers.0.mlp.c_proj"] == set()


def test_full_width_inventory_maps_completely():
    """The real-size inventory (full width, 1 block deep): sized from its shapes, every tensor
    mapped onto diffusers' model, every FP8 linear reached."""
    from fp8stream.io.header import Header, TensorInfo
    from fp8stream.methods.forward.forward_pass import prepare
    from fp8stream.synthetic.checkpoint import from_inventory

    tensors = from_inventory(inventory("auraflow")(1))
    header = Header([TensorInfo(t.name, t.dtype, t.shape, 0, t.nbytes) for t in tensors], None, 0)
    prepared = prepare(header)
    assert prepared.reason is None and prepared.detection.family == "auraflow", prepared.reason
    assert (prepared.config["attention_head_dim"], prepared.config["num_attention_heads"]) == (256, 12)
    fp8 = {t.name for t in tensors if t.dtype == "F8_E4M3"}
    assert len(fp8) == 24 and fp8 <= prepared.reached


def test_full_width_inventory_calibrates_within_the_memory_bound(tmp_path):
    """1 MMDiT + 1 single block at full width (0.6 GB): the default exits 0, every layer from the
    pass, peak RSS under 2 x the largest FP8 layer as F32 + 1 GiB (flat in depth: one weight live)."""
    from fp8stream.synthetic.checkpoint import from_inventory, write_checkpoint
    from test_memory import run_with_peak

    specs = inventory("auraflow")(1)
    src = tmp_path / "auraflow-full.safetensors"
    write_checkpoint(str(src), from_inventory(specs))
    largest = max(math.prod(s.shape) for s in specs if s.fp8)  # a modulation, 18432 x 3072
    report = tmp_path / "report.json"
    code, err, peak = run_with_peak(["calibrate", "--device", "cpu", *SMALL, str(src), str(tmp_path / "out")],
                                    stdout=report)
    assert code == 0, err[-2000:]
    _every_layer_from_the_pass(json.loads(report.read_text()), [s.name[:-7] for s in specs if s.fp8])
    bound = 2 * 4 * largest + 1024 * MB
    print(f"\nauraflow full width, 1+1 blocks: peak RSS {peak / MB:.0f} MiB, bound {bound / MB:.0f} MiB")
    assert peak < bound
