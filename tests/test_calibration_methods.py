"""The calibration methods of issue 4: stats files and name matching, record, heuristic, the
weight-aware simulation's streaming (BF16 producers, pipes), and plain scales in and out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import fp8stream
from fp8stream.errors import UsageError
from fp8stream.methods.simulate import graph as G
from fp8stream.methods.stats.stats_file import LayerStats, StatsFile, match, parse_stats
from tests.conftest import run_cli, run_subprocess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def _report(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["fp8stream.calibration"])


def _scales(result) -> dict[str, float]:
    return {layer["name"]: layer["scale"] for layer in _report(result)["layers"]}


@pytest.fixture(scope="module")
def flux_ckpt(tmp_path_factory):
    import quality_models as qm

    tf = qm.load_tiny_flux()
    path = tmp_path_factory.mktemp("flux") / "flux_fp8.safetensors"
    qm.write_tiny_flux_fp8(tf, path)
    return tf, path


def test_record_then_stats_gives_the_real_max_through_the_flux_renaming(flux_ckpt, tmp_path: Path) -> None:
    import quality_models as qm

    tf, ckpt = flux_ckpt
    stats = tmp_path / "stats.json"
    with fp8stream.record(tf.model, str(stats)):
        qm.sample(tf, 2, 3)
    rec = qm.flux_inputs_by_comfy_name(qm.record_linear_inputs(tf.model, lambda: qm.sample(tf, 2, 3)), tf.config)
    r = run_cli("calibrate", ckpt, tmp_path / "o.safetensors", "--method", "stats", "--stats", stats,
                "--stats-margin", "1", "--json")
    assert r.exit_code == 0, r.output
    scales = _scales(r)
    assert set(scales) == set(rec.inputs)
    for name, s in scales.items():
        assert s == pytest.approx(rec.amax(name) / 448, rel=1e-6), name
    layers = {layer["name"]: layer for layer in _report(r)["layers"]}
    assert "fused" in layers["double_blocks.0.img_attn.qkv"]["assumption"]

    # The default rule: the recorded max x 2, capped by simulate's hard bound where it is a proof
    r2 = run_cli("calibrate", ckpt, tmp_path / "m.safetensors", "--stats", stats, "--json")
    rb = run_cli("calibrate", ckpt, tmp_path / "b.safetensors", "--method", "simulate", "--json")
    assert r2.exit_code == 0 and rb.exit_code == 0, r2.output + rb.output
    bound = {layer["name"]: layer for layer in _report(rb)["layers"]}
    for layer in _report(r2)["layers"]:
        name, proof = layer["name"], not any("ASSUMED" in w for w in bound[layer["name"]]["warnings"])
        want = min(2 * rec.amax(name), bound[name]["scale"] * 448) if proof else 2 * rec.amax(name)
        assert layer["scale"] == pytest.approx(want / 448, rel=1e-6), name
        assert layer["margin"] == 2.0 and layer["basis"] == "measured", layer
        assert layer["bound"] == pytest.approx(bound[name]["scale"] * 448, rel=1e-6)
        assert ("capped by the hard bound" in layer["assumption"]) == (proof and want < 2 * rec.amax(name)), name
    meta = _metadata(tmp_path / "m.safetensors")
    assert meta["stats_margin"] == 2.0 and meta["method"] == "stats"


def test_a_bound_that_rests_on_an_assumed_input_never_caps(flux_ckpt, tmp_path: Path) -> None:
    """Recorded ranges far above every bound: the bound caps the layers where it is a proof from
    the file alone, and only those; the others (their bound warns ASSUMED) keep margin x amax."""
    _, ckpt = flux_ckpt
    rb = run_cli("calibrate", ckpt, tmp_path / "b.safetensors", "--method", "simulate", "--json")
    assert rb.exit_code == 0, rb.output
    bound = {layer["name"]: layer for layer in _report(rb)["layers"]}
    stats = {"format": "fp8stream.stats", "version": 1,
             "layers": {name: {"amax": layer["scale"] * 448 * 10, "calls": 1} for name, layer in bound.items()}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    r = run_cli("calibrate", ckpt, tmp_path / "s.safetensors", "--stats", tmp_path / "stats.json", "--json")
    assert r.exit_code == 0, r.output
    proofs = set()
    for layer in _report(r)["layers"]:
        proof = not any("ASSUMED" in w for w in bound[layer["name"]]["warnings"])
        proofs.add(proof)
        assert ("capped by the hard bound" in layer["assumption"]) == proof, layer
        assert ("rests on an assumption: not a cap" in layer["assumption"]) == (not proof), layer
        want = bound[layer["name"]]["scale"] * (1 if proof else 20)
        assert layer["scale"] == pytest.approx(want, rel=1e-6), layer
    assert proofs == {True, False}


def test_scales_out_are_scales_in(flux_ckpt, tmp_path: Path) -> None:
    _, ckpt = flux_ckpt
    r1 = run_cli("calibrate", ckpt, tmp_path / "a.safetensors", "--method", "simulate", "--json")
    (tmp_path / "scales.json").write_text(r1.stdout)
    r2 = run_cli("calibrate", ckpt, tmp_path / "b.safetensors", "--method", "stats",
                 "--stats", tmp_path / "scales.json", "--json")
    assert r2.exit_code == 0, r2.output
    assert _scales(r2) == _scales(r1)
    assert {layer["basis"] for layer in _report(r1)["layers"]} == {"assumed"}
    assert {layer["basis"] for layer in _report(r2)["layers"]} == {"given"}


def test_missing_stats_fail_unless_fallback(flux_ckpt, tmp_path: Path) -> None:
    _, ckpt = flux_ckpt
    (tmp_path / "s.json").write_text(json.dumps({"img_in": 0.5, "nonexistent.layer": 1.0}))
    r = run_subprocess("calibrate", ckpt, tmp_path / "o.safetensors", "--method", "stats",
                       "--stats", tmp_path / "s.json")
    assert r.returncode != 0 and "no stats" in r.stderr
    r = run_cli("calibrate", ckpt, tmp_path / "o.safetensors", "--method", "stats", "--stats", tmp_path / "s.json",
                "--fallback", "simulate", "--json")
    assert r.exit_code == 0, r.output
    rep = _report(r)
    assert _scales(r)["img_in"] == pytest.approx(0.5)
    assert any("match no FP8 layer" in n for n in rep["notes"])


def test_matching_order_map_exact_rename_suffix_and_ambiguity() -> None:
    layers = ["double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv", "double_blocks.0.img_mlp.0",
              "single_blocks.0.linear1", "img_in"]
    st = StatsFile({
        "transformer_blocks.0.attn.to_q": LayerStats(amax=2.0, sources=["q"]),
        "transformer_blocks.0.attn.to_v": LayerStats(amax=3.0, sources=["v"]),
        "single_transformer_blocks.0.proj_mlp": LayerStats(amax=5.0, sources=["m"]),
        "model.diffusion_model.img_in": LayerStats(amax=7.0, sources=["i"]),
        "qkv": LayerStats(amax=1.0, sources=["x"]),  # ambiguous suffix
        "mine": LayerStats(amax=9.0, sources=["u"]),
    })
    m = match(st, layers, {"mine": "double_blocks.0.img_mlp.0"})
    assert m.by_layer["double_blocks.0.img_attn.qkv"].amax == 3.0  # fused: max of the parts
    assert m.by_layer["single_blocks.0.linear1"].amax == 5.0
    assert m.by_layer["img_in"].amax == 7.0 and m.how["img_in"] == "suffix"
    assert m.by_layer["double_blocks.0.img_mlp.0"].amax == 9.0 and m.how["double_blocks.0.img_mlp.0"] == "--map"
    assert set(m.ambiguous["qkv"]) == {"double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv"}


def test_plain_scale_formats_are_accepted() -> None:
    assert parse_stats({"a": 0.5}).layers["a"].scale == 0.5
    doc = {"format": "fp8stream.stats", "version": 1, "layers": {"a": {"input_scale": 0.25}}}
    assert parse_stats(doc).layers["a"].scale == 0.25
    # a user's one-line error (exit 2), naming the version found and the one read
    with pytest.raises(UsageError, match=r"^stats: stats version 99 not supported \(this fp8stream reads 1\)$"):
        parse_stats({"format": "fp8stream.stats", "version": 99, "layers": {}})


def test_recorder_accumulates_amax_and_histogram(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    with fp8stream.record(model, str(tmp_path / "s.json")):
        model(torch.tensor([[1.0, -2.0, 0.0, 0.5]]))
        model(torch.tensor([[3.0, 0.0, 0.0, 0.0]]))
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["layers"]["0"]["amax"] == 3.0 and doc["layers"]["0"]["calls"] == 2
    assert sum(doc["layers"]["0"]["hist"]) == 4  # non-zero values
    assert not model[0]._forward_pre_hooks  # hooks removed


def test_heuristic_is_weight_scale_times_factor(small_model: Path, tmp_path: Path) -> None:
    r = run_cli("calibrate", small_model, tmp_path / "o.safetensors", "--method", "heuristic", "--factor", "0.25",
                "--json")
    assert r.exit_code == 0, r.output
    from safetensors import safe_open

    with safe_open(str(tmp_path / "o.safetensors"), "pt") as f:
        for name, s in _scales(r).items():
            assert s == pytest.approx(float(f.get_tensor(name + ".weight_scale")) * 0.25, rel=1e-6)


def test_simulate_reads_bf16_producers_and_pipes_match_files(flux_ckpt, tmp_path: Path) -> None:
    """Modulation linears kept in BF16 (not FP8) are modelled from their streamed rows; stdin == file."""
    import quality_models as qm

    tf, _ = flux_ckpt
    sd = qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)
    fp8 = [lm.comfy for lm in qm.flux_linear_maps(tf.config) if "mod" not in lm.comfy and "adaLN" not in lm.comfy]
    sd = {k: (v.bfloat16() if ("mod" in k or "adaLN" in k) else v) for k, v in sd.items()}
    path = tmp_path / "bf16mod.safetensors"
    qm.write_fp8_checkpoint(sd, fp8, path)
    r = run_cli("calibrate", path, tmp_path / "o.safetensors", "--method", "simulate", "--json")
    assert r.exit_code == 0, r.output
    qkv = {layer["name"]: layer for layer in _report(r)["layers"]}["double_blocks.0.img_attn.qkv"]
    assert "img_mod.lin" in qkv["assumption"] and not any("missing" in w for w in qkv["warnings"])
    with open(path, "rb") as f:
        p = run_subprocess("calibrate", "-", tmp_path / "p.safetensors", "--method", "simulate", stdin=f)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "p.safetensors").read_bytes() == (tmp_path / "o.safetensors").read_bytes()


def test_graph_names_the_known_families() -> None:
    g = G.build_graph(["joint_blocks.0.x_block.attn.qkv", "joint_blocks.0.x_block.mlp.fc2",
                       "joint_blocks.0.x_block.attn.proj", "joint_blocks.0.x_block.mlp.fc1"], set())
    assert g.family == "sd3"
    assert g.sources["joint_blocks.0.x_block.mlp.fc2"] == G.Act("gelu", "joint_blocks.0.x_block.mlp.fc1")
    g = G.build_graph(["blocks.0.self_attn.q", "blocks.0.self_attn.o", "blocks.0.ffn.0", "time_projection.1"], set())
    assert g.family == "wan"
    assert g.sources["blocks.0.ffn.0"] == G.AdaLN("time_projection.1", 3, 4, 6, "blocks.0.modulation")
    g = G.build_graph(["model.diffusion_model.double_blocks.0.img_mlp.2"], set())
    layer = "model.diffusion_model.double_blocks.0.img_mlp"
    assert g.sources[f"{layer}.2"] == G.Act("gelu", f"{layer}.0")
    g = G.build_graph(["foo.bar"], set())
    assert isinstance(g.sources["foo.bar"], G.External)


def test_a_prefixed_checkpoint_gets_the_same_sampled_scales_as_a_bare_one(tmp_path) -> None:
    """Seeds come from the bare layer name, so the percentile rule (which samples) agrees."""
    import json

    import torch

    from conftest import run_cli
    from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint

    def build(path, prefix: str) -> None:
        g = torch.Generator().manual_seed(5)
        tensors = []
        for name in ("double_blocks.0.img_attn.qkv", "double_blocks.0.img_mlp.0", "double_blocks.0.img_mlp.2"):
            shape = (64, 16) if not name.endswith("mlp.2") else (16, 64)
            tensors += comfy_fp8_linear(prefix + name, torch.randn(*shape, generator=g))
        write_checkpoint(str(path), tensors)

    scales = []
    for prefix in ("", "model.diffusion_model."):
        src, out = tmp_path / f"in{len(prefix)}.safetensors", tmp_path / f"out{len(prefix)}.safetensors"
        build(src, prefix)
        r = run_cli("calibrate", "--method", "simulate", "--json", "--rule", "percentile", src, out)
        assert r.exit_code == 0, r.output
        scales.append([layer["scale"] for layer in json.loads(r.stdout)["layers"]])
    assert scales[0] == scales[1]


@pytest.mark.parametrize("arch", ["flux", "sd3", "wan"])
def test_rows_no_input_reads_are_skipped_without_changing_a_scale(arch: str, tmp_path: Path, monkeypatch) -> None:
    """The bound reads only some rows of some producers (AdaLN: shift and scale, not the gate;
    an attention output: qkv's v rows): the CPU skips the others' sums, and the output is the
    same bytes as summing every row."""
    from fp8stream.methods.simulate import activation_model
    from fp8stream.synthetic.checkpoint import write_checkpoint
    from tests.architectures import build_model

    path = tmp_path / "in.safetensors"
    write_checkpoint(str(path), build_model(arch))
    skipped = []
    real = activation_model.rows_used
    monkeypatch.setattr(activation_model, "rows_used", lambda *a: skipped.append(real(*a)) or skipped[-1])
    r = run_cli("calibrate", path, tmp_path / "skip.safetensors", "--method", "simulate", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert skipped and skipped[0], "some producer rows should be left out"
    monkeypatch.setattr(activation_model, "rows_used", lambda *a: {})
    r = run_cli("calibrate", path, tmp_path / "all.safetensors", "--method", "simulate", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "skip.safetensors").read_bytes() == (tmp_path / "all.safetensors").read_bytes()


def test_the_bounds_seeded_normals_are_torchs_draws() -> None:
    """The bound samples the pooled-text embedder with numpy (no torch on the CPU): the same
    Mersenne Twister draws and Box-Muller as torch.randn with a seeded generator, the last bit of
    a sample aside, so scales stay those of the torch version within float32 rounding. Calls
    continue one stream, and sizes that are not a multiple of 16 take torch's redraw of the tail."""
    import numpy as np

    from fp8stream.methods.simulate.sampling import SeededNormal

    for seed in (0, 7, 2**40 + 3):
        g, ours = torch.Generator().manual_seed(seed), SeededNormal(seed)
        for shape in ((8, 768), (8, 23), (3, 7), (16,)):
            want, got = torch.randn(*shape, generator=g).numpy(), ours.randn(*shape)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        SeededNormal(0).randn(15)  # torch draws fewer than 16 another way: not made here
