"""Every FP8 flavour users have, read back the way ComfyUI's loader reads it.

Each test builds a checkpoint mirroring a real key inventory (tests/architectures.py), runs
`fp8stream calibrate`, then asks tests/comfy_loader.py which input scale ComfyUI's runtime will
use for each layer and whether FP8 matmul runs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from architectures import build_model, layer_names
from comfy_loader import load_like_comfyui
from conftest import run_cli
from fp8stream.formats import comfy_quant, legacy
from fp8stream.synthetic.checkpoint import SyntheticTensor, comfy_fp8_linear, f32_scalar, marker, write_checkpoint

PREFIX = "model.diffusion_model."


def write(tmp_path: Path, tensors, name: str = "in.safetensors", metadata=None) -> Path:
    path = tmp_path / name
    write_checkpoint(str(path), tensors, metadata=metadata)
    return path


def calibrate(src: Path, out: Path, *args: str) -> dict:
    result = run_cli("calibrate", "--method", "simulate", "--json", *args, src, out)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tensors_of(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def marker_doc(t: torch.Tensor) -> dict:
    return json.loads(t.numpy().tobytes())


def written_scales(report: dict) -> dict[str, float]:
    return {layer["name"]: layer["scale"] for layer in report["layers"]}


def assert_runtime_uses_our_scales(out: Path, report: dict, **loader_args) -> dict:
    runtime = load_like_comfyui(out, **loader_args)
    for name, scale in written_scales(report).items():
        assert runtime[name].fp8_matmul, name
        assert runtime[name].stored_input_scale == pytest.approx(scale, rel=1e-6), name
        assert runtime[name].input_scale != 1.0, name
    return runtime


# --- ComfyUI mixed precision ----------------------------------------------------------------


def test_comfy_org_weight_only_file_with_placeholders_runs_fp8_with_our_scales(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "comfy", weight_only=True, input_scale=1.0))
    assert all(not layer.fp8_matmul for layer in load_like_comfyui(src).values())
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out)
    assert len(report["layers"]) == len(layer_names("flux"))
    assert all(layer["source"] == "replaced" and layer["fp8_activations"] for layer in report["layers"])
    assert_runtime_uses_our_scales(out, report)


def test_keep_weight_only_adds_scales_that_comfyui_does_not_use(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "comfy", weight_only=True, input_scale=1.0))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--keep-weight-only")
    runtime = load_like_comfyui(out)
    for name, scale in written_scales(report).items():
        assert not runtime[name].fp8_matmul and runtime[name].stored_input_scale == pytest.approx(scale)
    assert not any(layer["fp8_activations"] for layer in report["layers"])


def test_rewritten_markers_take_room_for_either_flag_and_keep_other_keys(tmp_path: Path) -> None:
    """A marker's size is fixed from the header, not from the weight-only choice: the input's
    plus the flag's bytes, whichever is written (the data's places do not wait for the method)."""
    doc = {"format": "float8_e4m3fn", "full_precision_matrix_mult": True, "input_scale_calibrated": False}
    tensors = comfy_fp8_linear("a", torch.randn(16, 16))
    tensors = [t for t in tensors if not t.name.endswith("comfy_quant")] + [marker("a.comfy_quant", doc)]
    src, out = write(tmp_path, tensors), tmp_path / "out.safetensors"
    calibrate(src, out)
    before, _ = tensors_of(src)
    after, _ = tensors_of(out)
    assert after["a.comfy_quant"].shape[0] == before["a.comfy_quant"].shape[0] + comfy_quant.FLAG_BYTES
    assert marker_doc(after["a.comfy_quant"]) == {"format": "float8_e4m3fn", "input_scale_calibrated": False}


@pytest.mark.parametrize("flag", [1, "false"])
def test_a_true_weight_only_flag_of_any_type_is_cleared_where_the_layer_gets_a_scale(tmp_path: Path, flag) -> None:
    """ComfyUI tests full_precision_matrix_mult as Python does (scripts/comfy_truth.py): `1` and
    the string "false" make the layer weight-only there. Read as ComfyUI reads it, the flag is
    cleared where the layer gets a scale, so the report's "fp8 act: yes" holds in ComfyUI."""
    doc = {"format": "float8_e4m3fn", "full_precision_matrix_mult": flag}
    tensors = [t for t in comfy_fp8_linear("a", torch.randn(16, 16)) if not t.name.endswith("comfy_quant")]
    src, out = write(tmp_path, tensors + [marker("a.comfy_quant", doc)]), tmp_path / "out.safetensors"
    assert not load_like_comfyui(src)["a"].fp8_matmul
    report = calibrate(src, out)
    assert report["layers"][0]["fp8_activations"]
    assert_runtime_uses_our_scales(out, report)


@pytest.mark.parametrize("raw,weight_only", [
    (b'{"format": "float8_e4m3fn"}', True),
    (b'{"format":"float8_e4m3fn","full_precision_matrix_mult":true}', True),
    (b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true}', False),
    (b'{ "format" : "float8_e4m3fn" , "x" : 1.50 }', True),
])
def test_marker_rewrite_fits_the_size_planned_from_the_header(raw: bytes, weight_only: bool) -> None:
    was = comfy_quant.is_weight_only(json.loads(raw))
    size = comfy_quant.marker_size(len(raw))  # room for either flag: the same size whichever is written
    out = comfy_quant.rewrite_marker(raw, weight_only, size)
    assert len(out) == size and comfy_quant.is_weight_only(json.loads(out)) == weight_only
    assert {k: v for k, v in json.loads(out).items() if k != "full_precision_matrix_mult"} == \
        {k: v for k, v in json.loads(raw).items() if k != "full_precision_matrix_mult"}
    if was == weight_only:
        assert out.rstrip(b" ") == raw


# --- header metadata --------------------------------------------------------------------------


def quant_metadata_for(names: list[str], weight_only: bool) -> dict[str, str]:
    layers = {n: {"format": "float8_e4m3fn", **({"full_precision_matrix_mult": True} if weight_only else {})}
              for n in names}
    return {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_quantization_metadata_stays_in_sync_with_the_markers(tmp_path: Path, prefix: str) -> None:
    names = layer_names("sd3", prefix)
    src = write(tmp_path, build_model("sd3", "comfy", prefix=prefix, weight_only=True, input_scale=1.0),
                metadata=quant_metadata_for(names, weight_only=True))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--exclude", "*.mlp.fc2")
    after, metadata = tensors_of(out)
    meta_layers = json.loads(metadata["_quantization_metadata"])["layers"]
    assert json.loads(metadata["_quantization_metadata"])["format_version"] == "1.0"
    assert set(meta_layers) == set(names)
    for name in names:
        assert meta_layers[name] == marker_doc(after[f"{name}.comfy_quant"]), name
        assert comfy_quant.is_weight_only(meta_layers[name]) == name.endswith("mlp.fc2"), name
    runtime = assert_runtime_uses_our_scales(out, report)
    assert all(not runtime[n].fp8_matmul for n in names if n.endswith("fc2"))


def test_quantization_metadata_flag_wins_over_the_marker_tensor(tmp_path: Path) -> None:
    """ComfyUI reads the header, so the header's weight-only flag is what --keep-weight-only keeps."""
    tensors = comfy_fp8_linear("a", torch.randn(16, 16)) + comfy_fp8_linear("b", torch.randn(16, 16))
    src = write(tmp_path, tensors, metadata={"_quantization_metadata": json.dumps({"layers": {
        "a": {"format": "float8_e4m3fn", "full_precision_matrix_mult": True}, "b": {"format": "float8_e4m3fn"}}})})
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--keep-weight-only")
    after, metadata = tensors_of(out)
    assert marker_doc(after["a.comfy_quant"])["full_precision_matrix_mult"] is True
    runtime = load_like_comfyui(out)
    assert not runtime["a"].fp8_matmul and runtime["b"].fp8_matmul
    assert {layer["name"]: layer["fp8_activations"] for layer in report["layers"]} == {"a": False, "b": True}


# --- legacy scaled fp8 ------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("weight_only", [False, True])
def test_legacy_file_gets_scale_input_and_an_fp8_marker(tmp_path: Path, prefix: str, weight_only: bool) -> None:
    src = write(tmp_path, build_model("wan", "legacy", prefix=prefix, weight_only=weight_only))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out)
    after, _ = tensors_of(out)
    assert after[f"{prefix}scaled_fp8"].numel() == 0
    assert all(f"{n}.scale_input" in after and f"{n}.input_scale" not in after for n in layer_names("wan", prefix))
    assert all(layer["flavour"] == "legacy" for layer in report["layers"])
    assert_runtime_uses_our_scales(out, report)


def test_legacy_keep_weight_only_keeps_the_two_element_marker(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("wan", "legacy", weight_only=True))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--keep-weight-only")
    after, _ = tensors_of(out)
    assert after["scaled_fp8"].numel() == 2
    assert not any(layer.fp8_matmul for layer in load_like_comfyui(out).values())
    assert not any(layer["fp8_activations"] for layer in report["layers"])


def test_legacy_scale_of_exactly_one_is_nudged_by_one_ulp() -> None:
    nudged = legacy.never_one(1.0)
    assert nudged != 1.0 and struct.unpack("<f", struct.pack("<f", nudged))[0] == nudged
    assert nudged - 1.0 == pytest.approx(2.0**-23)
    assert legacy.never_one(0.5) == 0.5


def test_legacy_placeholder_scale_input_of_one_is_replaced(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("t5", "legacy", input_scale=1.0))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out)
    assert all(layer["source"] == "replaced" for layer in report["layers"])
    runtime = load_like_comfyui(out, text_encoder=True)
    assert all(runtime[n].stored_input_scale not in (None, 1.0) for n in layer_names("t5"))


def test_excluding_layers_of_a_legacy_file_is_a_clear_error(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("wan", "legacy"))
    result = run_cli("calibrate", "--method", "simulate", "--preset", "wan", src, tmp_path / "out.safetensors")
    assert result.exit_code == 2
    assert "no per-layer weight-only flag" in result.stderr and "--target comfy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_legacy_converted_to_comfy_with_excluded_layers(tmp_path: Path, prefix: str) -> None:
    src = write(tmp_path, build_model("wan", "legacy", prefix=prefix, input_scale=0.5))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--target", "comfy", "--preset", "wan")
    after, _ = tensors_of(out)
    assert f"{prefix}scaled_fp8" not in after
    assert not any(k.endswith((".scale_weight", ".scale_input")) for k in after)
    before, _ = tensors_of(src)
    excluded = {e["name"] for e in report["excluded"]}
    assert f"{prefix}blocks.0.self_attn.q" in excluded and f"{prefix}blocks.2.ffn.2" in excluded
    assert f"{prefix}blocks.1.ffn.2" not in excluded and f"{prefix}head.head" in excluded
    runtime = load_like_comfyui(out)
    for name in layer_names("wan", prefix):
        assert torch.equal(after[f"{name}.weight_scale"], before[f"{name}.scale_weight"])
        assert runtime[name].fp8_matmul == (name not in excluded), name
    assert_runtime_uses_our_scales(out, report)


# --- plain fp8 --------------------------------------------------------------------------------


def test_plain_fp8_gets_comfy_keys_by_default(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "plain"))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out)
    after, _ = tensors_of(out)
    for name in layer_names("flux"):
        assert float(after[f"{name}.weight_scale"]) == 1.0
        assert marker_doc(after[f"{name}.comfy_quant"]) == {"format": "float8_e4m3fn"}
    assert_runtime_uses_our_scales(out, report)


def test_plain_fp8_as_legacy(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "plain", prefix=PREFIX))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--target", "legacy")
    after, _ = tensors_of(out)
    assert after[f"{PREFIX}scaled_fp8"].numel() == 0 and after[f"{PREFIX}scaled_fp8"].dtype == torch.float8_e4m3fn
    assert all(float(after[f"{n}.scale_weight"]) == 1.0 for n in layer_names("flux", PREFIX))
    assert_runtime_uses_our_scales(out, report)


def test_target_legacy_refuses_comfy_layers(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "comfy"))
    result = run_cli("calibrate", "--method", "simulate", "--target", "legacy", src, tmp_path / "out.safetensors")
    assert result.exit_code == 2 and "not supported" in result.stderr


# --- passed through, with a reason ------------------------------------------------------------


def test_other_quantized_layers_are_reported_and_passed_through(tmp_path: Path) -> None:
    tensors = build_model("sd3", "comfy")  # its x_embedder.proj is a 4-D FP8 convolution
    tensors += [SyntheticTensor("e5.weight", "F8_E5M2", (8, 8), bytes(64))]
    tensors += [SyntheticTensor("fp4.weight", "U8", (8, 4), bytes(32)), marker("fp4.comfy_quant", {"format": "nvfp4"}),
                SyntheticTensor("fp4.weight_scale", "F8_E4M3", (8, 1), bytes(8)), f32_scalar("fp4.weight_scale_2", 0.1)]
    tensors += [SyntheticTensor("mx.weight", "F8_E4M3", (8, 32), bytes(256)),
                marker("mx.comfy_quant", {"format": "mxfp8"}),
                SyntheticTensor("mx.weight_scale", "F8_E8M0", (8, 1), bytes(8))]
    tensors += [SyntheticTensor("i8.weight", "I8", (8, 8), bytes(64)),
                marker("i8.comfy_quant", {"format": "int8_tensorwise"}), f32_scalar("i8.weight_scale", 0.1)]
    tensors += [SyntheticTensor("row.weight", "F8_E4M3", (8, 8), bytes(64)),
                marker("row.comfy_quant", {"format": "float8_e4m3fn_rowwise"}),
                SyntheticTensor("row.weight_scale", "F32", (8,), bytes(32))]
    meta = {"_quantization_metadata": json.dumps({"layers": {"fp4": {"format": "nvfp4"}}})}
    src, out = write(tmp_path, tensors, metadata=meta), tmp_path / "out.safetensors"
    report = calibrate(src, out)
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert "convolution" in reasons["x_embedder.proj"]
    assert "F8_E5M2" in reasons["e5"]
    assert "nvfp4" in reasons["fp4"] and "run time" in reasons["fp4"]
    assert "mxfp8" in reasons["mx"] and "int8" in reasons["i8"] and "rowwise" in reasons["row"]
    before, _ = tensors_of(src)
    after, _ = tensors_of(out)
    for prefix in ("x_embedder.proj.", "e5.", "fp4.", "mx.", "i8.", "row."):
        for key in [k for k in before if k.startswith(prefix)]:
            assert after[key].reshape(-1).view(torch.uint8).equal(before[key].reshape(-1).view(torch.uint8)), key
        assert f"{prefix}input_scale" not in after


def test_text_encoder_is_calibrated_and_the_report_says_comfyui_will_not_use_it(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("t5", "comfy", weight_only=True, input_scale=1.0))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out)
    assert len(report["layers"]) == len(layer_names("t5"))
    for layer in report["layers"]:
        assert not layer["fp8_activations"] and any("text encoder" in n for n in layer["notes"])
    runtime = load_like_comfyui(out, text_encoder=True)
    assert all(not runtime[n].fp8_matmul and runtime[n].stored_input_scale for n in layer_names("t5"))


# --- layer selection --------------------------------------------------------------------------


def test_excluded_layers_are_flagged_weight_only_not_left_at_one(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "comfy"))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--exclude", "*_mlp.2", "--exclude", "single_blocks.1.*")
    before, _ = tensors_of(src)
    after, _ = tensors_of(out)
    excluded = {e["name"]: e for e in report["excluded"]}
    assert set(excluded) == {"double_blocks.0.img_mlp.2", "double_blocks.0.txt_mlp.2", "double_blocks.1.img_mlp.2",
                             "double_blocks.1.txt_mlp.2", "single_blocks.1.linear1", "single_blocks.1.linear2",
                             "single_blocks.1.modulation.lin"}
    runtime = load_like_comfyui(out)
    for name in excluded:
        assert not runtime[name].fp8_matmul and f"{name}.input_scale" not in after
        grown = after[f"{name}.comfy_quant"].numel() - before[f"{name}.comfy_quant"].numel()
        assert grown == comfy_quant.FLAG_BYTES
        assert excluded[name]["fp8_activations"] is False
    assert_runtime_uses_our_scales(out, report)


def test_include_and_exclude_untouched(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("flux", "comfy", prefix=PREFIX))
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, "--include", "double_blocks.*", "--exclude-untouched")
    assert {layer["name"] for layer in report["layers"]} == \
        {n for n in layer_names("flux", PREFIX) if n.startswith(PREFIX + "double_blocks.")}
    before, _ = tensors_of(src)
    after, _ = tensors_of(out)
    for e in report["excluded"]:
        assert torch.equal(after[f"{e['name']}.comfy_quant"], before[f"{e['name']}.comfy_quant"])
        assert "untouched" in e["reason"]
    runtime = load_like_comfyui(out)
    assert runtime[PREFIX + "img_in"].fp8_matmul and runtime[PREFIX + "img_in"].input_scale == 1.0


@pytest.mark.parametrize("arch,preset,expected", [
    ("flux", "flux", {"img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer",
                      "vector_in.out_layer", "guidance_in.in_layer", "guidance_in.out_layer", "final_layer.linear",
                      "final_layer.adaLN_modulation.1"}),
    ("sd3", "auto", {"context_embedder", "t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.mlp.0", "y_embedder.mlp.2",
                     "final_layer.linear", "final_layer.adaLN_modulation.1"}),
    ("wan", "auto", {"text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                     "time_projection.1", "head.head"} | {f"blocks.{b}.{x}" for b in (0, 2) for x in
                                     ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                                      "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]}),
])
def test_presets_exclude_embedders_final_layers_and_video_edge_blocks(tmp_path: Path, arch, preset, expected) -> None:
    src = write(tmp_path, build_model(arch, "comfy", prefix=PREFIX))
    report = calibrate(src, tmp_path / "out.safetensors", "--preset", preset)
    excluded = {e["name"][len(PREFIX):]: e["reason"] for e in report["excluded"]}
    assert set(excluded) == expected
    assert all(reason.startswith(f"preset {arch}:") for reason in excluded.values())


def test_no_preset_unless_asked_and_auto_needs_a_known_architecture(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("t5", "comfy"))
    assert calibrate(src, tmp_path / "a.safetensors")["excluded"] == []
    result = run_cli("calibrate", "--method", "simulate", "--preset", "auto", src, tmp_path / "b.safetensors")
    assert result.exit_code == 2 and "no preset for family t5" in result.stderr  # a family, but no preset


# --- shared scales ----------------------------------------------------------------------------


def test_layers_fed_by_one_tensor_share_the_max_of_their_scales(tmp_path: Path) -> None:
    src = write(tmp_path, build_model("wan", "comfy"))
    alone = {}
    for leaf in ("self_attn.q", "self_attn.k", "self_attn.v", "cross_attn.q", "cross_attn.k", "cross_attn.v"):
        name = f"blocks.1.{leaf}"
        alone[name] = written_scales(calibrate(src, tmp_path / f"{leaf}.safetensors", "--include", name))[name]
    scales = written_scales(calibrate(src, tmp_path / "out.safetensors"))
    qkv = [f"blocks.1.self_attn.{x}" for x in "qkv"]
    assert {scales[n] for n in qkv} == {max(alone[n] for n in qkv)}
    kv = ["blocks.1.cross_attn.k", "blocks.1.cross_attn.v"]
    assert {scales[n] for n in kv} == {max(alone[n] for n in kv)}
    assert scales["blocks.1.cross_attn.q"] == alone["blocks.1.cross_attn.q"]  # q reads the other stream


def test_groups_come_from_names_and_skip_cross_attention_q() -> None:
    from fp8stream.formats.groups import shared_scale_groups

    names = [f"{PREFIX}blocks.0.self_attn.{x}" for x in "qkvo"] + [f"{PREFIX}blocks.0.cross_attn.{x}" for x in "qkvo"]
    names += [f"encoder.block.0.layer.1.DenseReluDense.wi_{i}" for i in (0, 1)]
    names += ["double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv"]
    assert shared_scale_groups(names) == [
        [f"{PREFIX}blocks.0.self_attn.{x}" for x in "qkv"],
        [f"{PREFIX}blocks.0.cross_attn.{x}" for x in "kv"],
        ["encoder.block.0.layer.1.DenseReluDense.wi_0", "encoder.block.0.layer.1.DenseReluDense.wi_1"],
    ]


# --- header-only layout (pipes) ---------------------------------------------------------------


@pytest.mark.parametrize("flavour,args", [("comfy", ["--exclude", "*.ffn.2"]), ("legacy", []),
                                          ("legacy", ["--target", "comfy", "--preset", "wan"]),
                                          ("plain", ["--target", "legacy"]), ("plain", ["--preset", "wan"])])
def test_output_size_is_known_from_the_header_alone(tmp_path: Path, flavour: str, args: list[str]) -> None:
    src = write(tmp_path,
                build_model("wan", flavour, weight_only=True, input_scale=1.0 if flavour != "plain" else None))
    planned = run_cli("calibrate", "--method", "simulate", "--json", "--dry-run", *args, src)
    out = tmp_path / "out.safetensors"
    report = calibrate(src, out, *args)
    assert json.loads(planned.stdout)["bytes_out"] == out.stat().st_size == report["bytes_out"]


def test_synthetic_checkpoints_order_data_as_the_safetensors_library_does(tmp_path: Path) -> None:
    """Scales (F32) first, markers (U8) after every FP8 weight: the order real files have, which
    the stream's tests and the benchmark inventories rely on."""
    from safetensors.torch import save_file

    from fp8stream.io.reader import LazyFile

    tensors = {"a.weight_scale": torch.ones(()), "a.weight": torch.zeros(4, dtype=torch.float8_e4m3fn),
               "a.comfy_quant": torch.zeros(3, dtype=torch.uint8),
               "b.weight": torch.zeros(4, dtype=torch.float8_e4m3fn),
               "c.bias": torch.zeros(2, dtype=torch.bfloat16), "d.ids": torch.zeros(2, dtype=torch.int64),
               "e.mask": torch.zeros(2, dtype=torch.bool), "f.w": torch.zeros(2, dtype=torch.float8_e5m2)}
    dtypes = ["F32", "F8_E4M3", "U8", "F8_E4M3", "BF16", "I64", "BOOL", "F8_E5M2"]
    save_file(tensors, str(tmp_path / "lib.safetensors"))
    ours = [SyntheticTensor(name, dtype, tuple(t.shape),
                            lambda t=t: [t.reshape(-1).view(torch.uint8).numpy().tobytes()])
            for (name, t), dtype in zip(tensors.items(), dtypes, strict=True)]
    write_checkpoint(str(tmp_path / "ours.safetensors"), ours)
    orders = []
    for name in ("lib", "ours"):
        with LazyFile(str(tmp_path / f"{name}.safetensors")) as f:
            orders.append([t.name for t in f.header.tensors])
    assert orders[0] == orders[1]
    assert orders[0].index("a.comfy_quant") > orders[0].index("b.weight")
