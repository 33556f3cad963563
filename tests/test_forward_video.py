"""Video families through the forward pass: Wan 2.2 (i2v-A14B expert, TI2V-5B), HunyuanVideo 1.5,
LTX-2, Cosmos. Each variant: a tiny random model built with diffusers' class, written under the
names ComfyUI's files use, equals the eager run layer by layer, and from the CLI every FP8
linear gets its scale from the forward pass (or is kept weight-only as the conditioning path),
none from a guess."""

from __future__ import annotations

import json

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest

import forward_tiny as ft  # noqa: E402
from test_forward import _cli, _eager_amax, _forward_args, _run  # noqa: E402

# variant id -> (family, shape options of forward_tiny)
VARIANTS = {
    "wan22_i2v_a14b": ("wan", {"image": False, "in_channels": 2 * 4 + 4}),  # latent + mask + image latent
    "wan22_ti2v_5b": ("wan", {"image": False, "channels": 48}),  # Wan 2.2 VAE: per-token timesteps
    "hunyuan_video15": ("hunyuan-video-1.5", {}),  # ComfyUI's repack: fused qkv
    "hunyuan_video15_split_meanflow": ("hunyuan-video-1.5", {"split_qkv": True, "meanflow": True}),
    "ltx2": ("ltx2", {}),  # audio and video streams
    "ltx23": ("ltx2", {"v23": True}),  # gated attention, prompt AdaLN
    "cosmos_predict2_video2world": ("cosmos", {"learnable_pos": True}),  # condition mask, per-frame timesteps
    "cosmos_predict2_text2image": ("cosmos", {"video2world": False}),
}


def _calibrated(src, out) -> tuple[dict, dict]:
    """The CLI's forward pass on `src`: ({scaled layer: report}, {layer kept weight-only: report})."""
    p = _cli(str(src), str(out), *_forward_args())
    assert p.exit_code == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    return {r["name"]: r for r in report["layers"]}, {r["name"]: r for r in report["excluded"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_streaming_pass_equals_eager_run(variant, tmp_path):
    family, options = VARIANTS[variant]
    path = tmp_path / f"{variant}.safetensors"
    model, state, cfg = ft.tiny(family, **options)
    layers = ft.write(state, path)
    result = _run(path)
    assert result.family == family and result.reason is None, result.reason
    assert result.peak_live == 1
    eager = _eager_amax(family, model, state, layers, cfg)
    assert set(result.module_amax) == set(eager)
    for name, a in eager.items():
        assert result.module_amax[name] == pytest.approx(a, rel=1e-5, abs=1e-6), name
    assert sorted(n[:-7] for n in result.amax) == sorted(layers)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cli_scales_every_layer_from_the_forward_pass(variant, tmp_path):
    family, options = VARIANTS[variant]
    src = tmp_path / "in.safetensors"
    _, state, _ = ft.tiny(family, **options)
    layers = ft.write(state, src, "model.diffusion_model.")
    got, kept = _calibrated(src, tmp_path / "out.safetensors")
    assert sorted([*got, *kept]) == sorted(layers)
    assert len(kept) <= len(layers) // 4
    assert all("conditioning path" in json.dumps(r) for r in kept.values()), kept
    for r in got.values():
        assert r["method"] == "forward"
        assert r["assumption"].startswith(f"{family} forward amax"), r
        assert not any("not reached" in w or "ASSUMED" in w for w in r["warnings"]), r


def test_default_sizes_fit_a_small_learned_position_table(tmp_path):
    """Cosmos with learned positions for 8 latent rows and columns, at the default forward sizes
    (more tokens than that): the latent is cut to the table, the run exits 0 and scales the layers."""
    src = tmp_path / "in.safetensors"
    _, state, _ = ft.tiny("cosmos", learnable_pos=True)
    layers = ft.write(state, src, "model.diffusion_model.")
    p = _cli(str(src), str(tmp_path / "out.safetensors"), "--json", "--no-progress", "--forward-threads", "1")
    assert p.exit_code == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert len(report["layers"]) + len(report["excluded"]) == len(layers)
    assert all(r["assumption"].startswith("cosmos forward amax") for r in report["layers"]), report["layers"]


@pytest.mark.parametrize("arch, family", [("wan22-5b", "wan"), ("wan22-i2v-a14b", "wan"),
                                          ("hunyuan-video-1.5", "hunyuan-video-1.5"), ("ltx2", "ltx2"),
                                          ("cosmos-14b", "cosmos"), ("cosmos-2b", "cosmos")])
def test_full_width_inventory_maps_completely(arch, family):
    """The real-size inventory of scripts/bench.py (full width, 1 block deep): recognised, sized
    from its shapes, every tensor mapped onto diffusers' model, every FP8 linear reached."""
    from fp8stream.families import inventory
    from fp8stream.io.header import Header, TensorInfo
    from fp8stream.methods.forward.forward_pass import prepare
    from fp8stream.synthetic.checkpoint import from_inventory

    tensors = from_inventory(inventory(arch)(1))
    header = Header([TensorInfo(t.name, t.dtype, t.shape, 0, t.nbytes) for t in tensors], None, 0)
    prepared = prepare(header)
    assert prepared.reason is None and prepared.detection.family == family, prepared.reason
    fp8 = {t.name for t in tensors if t.dtype == "F8_E4M3"}
    assert fp8 and fp8 <= prepared.reached


def test_all_in_one_checkpoint_runs_the_model_under_its_prefix(tmp_path):
    """LTX-2's checkpoints carry the VAE, the audio VAE and the vocoder beside
    `model.diffusion_model.`: the pass runs the transformer under that prefix; a layer it does
    not run (a text connector, which diffusers keeps out of the transformer) is not guessed."""
    import torch

    _, state, _ = ft.tiny("ltx2")
    full = {"model.diffusion_model." + k: v for k, v in state.items()}
    connector = "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q"
    full[connector + ".weight"] = torch.randn(16, 16)
    full["vae.decoder.conv_in.conv.weight"] = torch.randn(8, 4, 3, 3, 3)
    full["vocoder.conv_pre.weight"] = torch.randn(8, 4, 7)
    layers = ["model.diffusion_model." + n for n in ft.fp8_linears(state)] + [connector]
    src = tmp_path / "all_in_one.safetensors"
    ft.qm.write_fp8_checkpoint(full, layers, src)
    got, kept = _calibrated(src, tmp_path / "out.safetensors")
    assert sorted([*got, *kept]) == sorted(layers)
    assert all(r["assumption"].startswith("ltx2 forward amax") for n, r in got.items() if n != connector)
    assert connector in kept and "not reached by the forward pass" in kept[connector]["reason"], kept.get(connector)
