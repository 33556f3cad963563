"""`fp8stream check FILE`: the model run as ComfyUI runs the file, beside full precision and
dynamic FP8, on tiny Flux checkpoints whose MLP activations reach the thousands (as real DiTs'
do): our calibrated output checks near dynamic FP8, the same file with 1.0 (or no) scales is
called unusable and fails --min-sqnr, a planted bad scale is named the worst layer, a family
without a forward pass exits 5 after saying what the file shows, a pipe works.

Margins measured when this test was written (tiny Flux, MLP inputs x300, 3 samples of 16 + 8 tokens): dynamic
FP8 27.3 dB end to end; our output 29.0 dB (its conditioning layers run weight-only); 1.0
everywhere 12.6 dB with 6 layers clipping (their inputs reach 2,300); no input_scale at all the
same 12.6 dB; a scale 100x too small on one MLP output layer: 7.0 dB, that layer 30.7 dB below
dynamic where the next is 2.5 dB below.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

import forward_tiny as ft  # noqa: E402
from conftest import run_cli, subprocess_env  # noqa: E402
from fp8stream.cli import main  # noqa: E402
from fp8stream.errors import EXIT_BELOW_MIN_SQNR  # noqa: E402
from fp8stream.synthetic.checkpoint import (  # noqa: E402
    bf16_tensor,
    comfy_fp8_linear,
    legacy_fp8_linear,
    legacy_marker,
    marker,
    scale_values,
    write_checkpoint,
)

PASS = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
        "--no-progress"]
LOUD = ("img_mlp.0.", "txt_mlp.0.", "linear1.")  # their outputs feed the MLP output layers: x300 -> inputs ~2,000
BAD = "double_blocks.1.img_mlp.2"


def _with_scales(src: Path, dst: Path, scale_of) -> Path:
    """`src` with each input_scale replaced by scale_of(name, value) (None: removed)."""
    with safe_open(str(src), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    out = {}
    for name, t in tensors.items():
        value = scale_of(name, float(t)) if name.endswith(".input_scale") else t
        if value is not None:
            out[name] = torch.tensor(value, dtype=torch.float32) if isinstance(value, float) else value
    save_file(out, str(dst), metadata)
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("check")
    _, state, _ = ft.tiny("flux")
    state = {k: v * 300 if any(p in k for p in LOUD) else v for k, v in state.items()}
    ft.write(state, folder / "in.safetensors")
    r = run_cli("calibrate", folder / "in.safetensors", folder / "ours.safetensors", *PASS)
    assert r.exit_code == 0, r.output
    ours = folder / "ours.safetensors"
    return {"ours": ours,
            "one": _with_scales(ours, folder / "one.safetensors", lambda n, v: 1.0),
            "none": _with_scales(ours, folder / "none.safetensors", lambda n, v: None),
            "bad": _with_scales(ours, folder / "bad.safetensors", lambda n, v: v / 100 if BAD in n else v)}


def _check(path: Path, *args: str):
    r = run_cli("check", path, *PASS, "--json", *args)
    return r, json.loads(r.stdout)


def test_our_output_checks_near_dynamic_fp8(files):
    r, doc = _check(files["ours"], "--min-sqnr", "20")
    comfy, dynamic = doc["end_to_end"]["comfy"]["sqnr_db"], doc["end_to_end"]["dynamic"]["sqnr_db"]
    assert r.exit_code == 0 and doc["status"] == "ok"
    assert abs(comfy - dynamic) < 5.0, doc["verdict"]  # measured 1.7 dB apart
    assert doc["counts"]["clipping"] == 0 and "unusable" not in doc["verdict"]
    assert [s["t"] for s in doc["end_to_end"]["comfy"]["per_sample"]] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("variant", ["one", "none"])
def test_unit_or_missing_scales_are_unusable_and_fail_min_sqnr(files, variant):
    r, doc = _check(files[variant])
    assert r.exit_code == 0  # no --min-sqnr: a report, not a failure
    assert doc["verdict"].startswith("unusable in ComfyUI's fast FP8 path")
    assert doc["end_to_end"]["comfy"]["sqnr_db"] < 17.0 < 22.0 < doc["end_to_end"]["dynamic"]["sqnr_db"]
    clipping = {layer["name"] for layer in doc["layers"] if layer["clips"]}
    assert {"double_blocks.0.img_mlp.2", "double_blocks.1.img_mlp.2"} <= clipping
    r = run_cli("check", files[variant], *PASS, "--min-sqnr", "20")
    assert r.exit_code == EXIT_BELOW_MIN_SQNR == 6
    assert "below --min-sqnr 20" in r.stderr.splitlines()[-1] and "unusable" in r.stderr


def test_a_planted_bad_scale_is_named_the_worst_layer(files):
    r = run_cli("check", files["bad"], *PASS)
    assert r.exit_code == 0
    lines = r.stderr.splitlines()
    assert lines[0].endswith(f"worst layer {BAD}")  # the verdict names it, and the table puts it first
    table = lines[lines.index(next(line for line in lines if line.startswith("worst layers"))) + 2]
    assert table.split()[0] == BAD
    _, doc = _check(files["bad"])
    worst = max((layer for layer in doc["layers"] if layer["runs_fp8"]), key=lambda layer: layer["gap_db"])
    assert worst["name"] == BAD and worst["gap_db"] > 20.0  # measured 30.7; the next 2.5
    # one-layer figures come from the full-precision stream's input: the layers after the bad one
    # keep their figures (on the file as ComfyUI runs it, its error would reach them)
    _, ours = _check(files["ours"])
    after = [(a, b) for a, b in zip(ours["layers"], doc["layers"], strict=True) if a["name"].startswith("single_")]
    assert after and all(b["static_sqnr_db"] == pytest.approx(a["static_sqnr_db"], abs=0.01) for a, b in after)


def test_json_keys(files):
    _, doc = _check(files["ours"])
    assert {"input", "family", "status", "verdict", "end_to_end", "counts", "thresholds", "layers",
            "min_sqnr", "seconds"} <= set(doc)
    assert doc["family"] == "flux" and set(doc["end_to_end"]) == {"comfy", "dynamic"}
    assert {"name", "runs_fp8", "why", "scale", "stored_scale", "covered", "amax", "clipped", "clips",
            "static_sqnr_db", "dynamic_sqnr_db", "gap_db"} <= set(doc["layers"][0])
    weight_only = [layer for layer in doc["layers"] if not layer["runs_fp8"]]
    assert weight_only and all("weight-only" in layer["why"] for layer in weight_only)  # the conditioning path


def test_verbose_lists_every_layer(files):
    short, full = run_cli("check", files["ours"], *PASS), run_cli("check", files["ours"], *PASS, "--verbose")
    _, doc = _check(files["ours"])
    assert len(full.stderr.splitlines()) - len(short.stderr.splitlines()) == len(doc["layers"]) - 10


def test_a_family_without_a_forward_pass_exits_5_with_what_the_file_shows(tmp_path):
    names = ("enc.layer0", "enc.layer1")
    tensors = [t for i, name in enumerate(names) for t in comfy_fp8_linear(name, (16, 16), seed=i)]
    write_checkpoint(str(tmp_path / "x.safetensors"), tensors + [bf16_tensor("enc.norm.weight", torch.ones(16))])
    r = run_cli("check", tmp_path / "x.safetensors", "--json")
    assert r.exit_code == 5
    doc = json.loads(r.stdout)
    assert doc["status"] == "not-run" and "not recognised" in doc["reason"]
    assert "2 of 2 FP8 layers run FP8" in doc["verdict"] and doc["counts"]["fp8_layers"] == 2


def test_a_family_without_a_forward_pass_says_when_a_stored_scale_is_not_positive_and_finite(tmp_path):
    """ComfyUI quantizes with a stored 0 as it is (scripts/comfy_truth.py): so does check."""
    tensors = [*comfy_fp8_linear("enc.layer0", (16, 16), input_scale=0.0),
               *comfy_fp8_linear("enc.layer1", (16, 16), seed=1)]
    write_checkpoint(str(tmp_path / "x.safetensors"), tensors)
    r = run_cli("check", tmp_path / "x.safetensors", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 5 and doc["verdict"].endswith(
        "; 1 layer's stored input_scale is not positive and finite (1 zero): run as stored, as ComfyUI runs it"), \
        doc["verdict"]
    assert doc["layers"][0]["scale"] == 0.0 and "outputs its bias alone" in doc["layers"][0]["why"]


def _stopping_file(path: Path, how: str) -> Path:
    """enc.layer0 as ComfyUI cannot run it (scripts/comfy_truth.py has each), enc.layer1 as it can."""
    layer0 = comfy_fp8_linear("enc.layer0", (16, 16))
    metadata = None
    if how == "2 values":
        layer0.append(scale_values("enc.layer0.input_scale", [0.5, 0.5]))
    elif how == "BF16":
        layer0.append(scale_values("enc.layer0.input_scale", [0.5], "BF16"))
    elif how == "legacy 2 values":  # its loader reads every scale_input as one value, weight-only or not
        layer0 = [*legacy_fp8_linear("enc.layer0", (16, 16)), scale_values("enc.layer0.scale_input", [0.5, 0.5]),
                  legacy_marker(weight_only=True)]
    else:  # a bare format name in _quantization_metadata: ComfyUI reads each entry as an object
        metadata = {"_quantization_metadata": json.dumps({"layers": {"enc.layer0": "float8_e4m3fn"}})}
    layer1 = legacy_fp8_linear("enc.layer1", (16, 16), seed=1) if how.startswith("legacy") else \
        comfy_fp8_linear("enc.layer1", (16, 16), seed=1, input_scale=0.5)
    write_checkpoint(str(path), layer0 + layer1, metadata)
    return path


@pytest.mark.parametrize("how,why", [
    ("2 values", "input_scale of 2 values: ComfyUI's FP8 quantize takes one and stops"),
    ("BF16", "input_scale stored as BF16: ComfyUI's FP8 quantize takes F32 only and stops"),
    ("legacy 2 values", "scale_input of 2 values: ComfyUI's legacy loader reads one and stops"),
    ("bare metadata", "_quantization_metadata entry is a bare format name"),
])
def test_a_family_without_a_forward_pass_says_where_comfyui_stops(tmp_path, how, why):
    r = run_cli("check", _stopping_file(tmp_path / "x.safetensors", how), "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 5 and f"; ComfyUI stops with an error on 1 layer (enc.layer0: {why}" in doc["verdict"], \
        doc["verdict"]
    stops = {layer["name"]: layer["comfyui_stops"] for layer in doc["layers"]}
    assert stops == {"enc.layer0": True, "enc.layer1": False} and doc["counts"]["comfyui_stops"] == 1


@pytest.mark.parametrize("flag,runs_fp8", [(1, False), ("false", False), ([0], False), (0, True), (None, True)])
def test_the_weight_only_flag_is_read_as_comfyui_reads_it(tmp_path, flag, runs_fp8):
    """ComfyUI tests full_precision_matrix_mult as Python does: 1, "false" and [0] are true."""
    layer0 = [t for t in comfy_fp8_linear("enc.layer0", (16, 16)) if not t.name.endswith(".comfy_quant")]
    doc = {"format": "float8_e4m3fn", "full_precision_matrix_mult": flag}
    write_checkpoint(str(tmp_path / "x.safetensors"), [*layer0, marker("enc.layer0.comfy_quant", doc)])
    r = run_cli("check", tmp_path / "x.safetensors", "--json")
    layer = json.loads(r.stdout)["layers"][0]
    assert r.exit_code == 5 and layer["runs_fp8"] is runs_fp8, layer


def _strict(x: str):
    raise ValueError(f"{x} is not JSON")


def test_json_stays_json_with_a_nan_or_infinite_stored_scale(files, tmp_path):
    bad = {f"{BAD}.input_scale": math.nan, "double_blocks.0.img_mlp.2.input_scale": math.inf}
    path = _with_scales(files["ours"], tmp_path / "nan.safetensors", lambda n, v: bad.get(n, v))
    r = run_cli("check", path, *PASS, "--json")
    doc = json.loads(r.stdout, parse_constant=_strict)
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert r.exit_code == 0 and layers[BAD]["stored_scale"] is None and layers[BAD]["scale"] is None
    assert "as stored" in layers[BAD]["why"] and not layers["double_blocks.0.img_mlp.2"]["real_scale"]
    assert layers[BAD]["covered"] is None and doc["end_to_end"]["comfy"]["sqnr_db"] is None


@pytest.mark.parametrize("stored,kind", [(math.nan, "NaN"), (math.inf, "infinite"), (-math.inf, "infinite")])
def test_a_nan_or_infinite_stored_scale_gives_nan_as_in_comfyui_and_is_unusable(files, tmp_path, stored, kind):
    """ComfyUI quantizes with the stored scale unchecked: NaN or infinite gives a NaN output
    (scripts/comfy_truth.py), so the file is unusable, and the verdict says why."""
    path = _with_scales(files["ours"], tmp_path / "nan.safetensors", lambda n, v: stored if BAD in n else v)
    r, doc = _check(path, "--min-sqnr", "20")
    assert r.exit_code == EXIT_BELOW_MIN_SQNR and doc["status"] == "below-min-sqnr"
    assert doc["verdict"].startswith("unusable in ComfyUI's fast FP8 path: the model's output is NaN as ComfyUI "
                                     "runs the file (dynamic FP8 would give "), doc["verdict"]
    assert doc["verdict"].endswith(f" dB); 1 layer's stored input_scale is not positive and finite (1 {kind}): "
                                   "run as stored, as ComfyUI runs it"), doc["verdict"]
    layer = next(layer for layer in doc["layers"] if layer["name"] == BAD)
    assert layer["static_sqnr_db"] is None and layer["gap_db"] is None  # no figure: its output is NaN
    table = run_cli("check", path, *PASS).stderr.splitlines()
    assert table[4].split()[0] == BAD  # the table's first layer (after the verdict, end to end, heading, columns)


def test_a_stored_scale_of_zero_is_run_as_in_comfyui(files, tmp_path):
    """A stored 0: ComfyUI saturates every input and multiplies by 0 (scripts/comfy_truth.py),
    so the layer gives its bias alone: every input clips and its figure is about 0 dB. An input
    that is exactly 0 (after a GELU that underflowed, as on the MLP output layers here) becomes
    0 x inf = NaN there: the model's output is NaN."""
    qkv = "double_blocks.1.img_attn.qkv"  # its inputs (a LayerNorm's) are never exactly 0
    path = _with_scales(files["ours"], tmp_path / "zero.safetensors", lambda n, v: 0.0 if qkv in n else v)
    r, doc = _check(path)
    layer = next(layer for layer in doc["layers"] if layer["name"] == qkv)
    assert r.exit_code == 0 and layer["scale"] == 0.0 and layer["clipped"] == 1.0 and layer["covered"] == 0.0
    assert abs(layer["static_sqnr_db"]) < 1.0, layer  # the output lost: noise = signal
    assert doc["verdict"].endswith(
        "; 1 layer's stored input_scale is not positive and finite (1 zero): run as stored, as ComfyUI runs it")
    assert run_cli("check", path, *PASS).stderr.splitlines()[4].split()[0] == qkv  # the worst layer: listed first
    path = _with_scales(files["ours"], tmp_path / "zero.safetensors", lambda n, v: 0.0 if BAD in n else v)
    r, doc = _check(path)
    assert doc["end_to_end"]["comfy"]["sqnr_db"] is None and "output is NaN" in doc["verdict"]


def test_negative_stored_scales_run_as_their_magnitude_as_in_comfyui(files, tmp_path):
    """ComfyUI's quantize divides by the scale and its matmul multiplies by it: the signs cancel
    (scripts/comfy_truth.py), so every scale negated checks as the file itself."""
    path = _with_scales(files["ours"], tmp_path / "negative.safetensors", lambda n, v: -v)
    (r, doc), (_, ours) = _check(path), _check(files["ours"])
    n = sum(layer["runs_fp8"] for layer in doc["layers"])
    assert r.exit_code == 0 and doc["end_to_end"]["comfy"] == ours["end_to_end"]["comfy"]
    assert [layer["covered"] for layer in doc["layers"]] == [layer["covered"] for layer in ours["layers"]]
    assert doc["verdict"] == ours["verdict"] + (f"; {n} layers' stored input_scale is not positive and finite "
                                                f"({n} negative): run as stored, as ComfyUI runs it")
    assert "\n" not in doc["verdict"] and "not positive" not in ours["verdict"]


def test_a_stored_scale_comfyui_stops_on_makes_the_file_unusable(files, tmp_path):
    """An input_scale of 2 values: ComfyUI stops with an error in the layer's first call, so the
    model gives no output there; the verdict says so and --min-sqnr fails."""
    with safe_open(str(files["ours"]), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors[f"{BAD}.input_scale"] = tensors[f"{BAD}.input_scale"].reshape(1).repeat(2)
    save_file(tensors, str(tmp_path / "two.safetensors"), metadata)
    r, doc = _check(tmp_path / "two.safetensors", "--min-sqnr", "20")
    assert r.exit_code == EXIT_BELOW_MIN_SQNR and doc["counts"]["comfyui_stops"] == 1
    assert doc["verdict"].startswith(f"unusable in ComfyUI: ComfyUI stops with an error on 1 layer ({BAD}: "
                                     "input_scale of 2 values"), doc["verdict"]
    assert doc["end_to_end"]["comfy"]["sqnr_db"] is None and doc["end_to_end"]["dynamic"]["sqnr_db"] > 20.0
    # inspect, the header-only view, says it too, by the same rule
    r = run_cli("inspect", tmp_path / "two.safetensors", "--json")
    stops = {layer["name"]: layer["comfyui_stops"] for layer in json.loads(r.stdout)["fp8_layers"]}
    assert r.exit_code == 0 and stops.pop(BAD).startswith("input_scale of 2 values") and not any(stops.values())
    text = run_cli("inspect", tmp_path / "two.safetensors").output
    assert f"ComfyUI stops with an error on 1 layer: {BAD}: input_scale of 2 values" in text
    assert "stops" not in run_cli("inspect", files["ours"]).output


def test_nan_weights_fail_min_sqnr_with_a_verdict_that_says_so(files, tmp_path):
    with safe_open(str(files["ours"]), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    raw = tensors[f"{BAD}.weight"].view(torch.uint8).clone()
    raw[0, :4] = 0x7F  # float8_e4m3fn's NaN
    tensors[f"{BAD}.weight"] = raw.view(torch.float8_e4m3fn)
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata)
    r = run_cli("check", tmp_path / "nan.safetensors", *PASS, "--json", "--min-sqnr", "10")
    doc = json.loads(r.stdout, parse_constant=_strict)
    assert r.exit_code == EXIT_BELOW_MIN_SQNR and doc["status"] == "below-min-sqnr"
    assert "NaN" in doc["verdict"] and doc["end_to_end"]["comfy"]["sqnr_db"] is None


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_min_sqnr_that_is_not_a_finite_number_is_a_usage_error(tmp_path, value):
    write_checkpoint(str(tmp_path / "x.safetensors"), comfy_fp8_linear("enc.layer0", (16, 16)))
    r = run_cli("check", tmp_path / "x.safetensors", "--json", f"--min-sqnr={value}")
    assert r.exit_code == 2 and r.stdout == "" and "--min-sqnr" in r.stderr, r.stderr


def test_a_reader_that_left_before_the_json_is_one_line_and_exit_1(tmp_path):
    """`fp8stream check FILE --json | true`: the pipe's reader is gone when the report is written."""
    write_checkpoint(str(tmp_path / "x.safetensors"), comfy_fp8_linear("enc.layer0", (16, 16)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "fp8stream", "check", str(tmp_path / "x.safetensors"), "--json"],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    finally:
        os.close(write_end)
    assert r.returncode == 1 and r.stderr.splitlines() == ["fp8stream: error: the reading end of the pipe closed"]


def test_a_report_file_in_a_missing_folder_is_one_line(tmp_path):
    write_checkpoint(str(tmp_path / "x.safetensors"), comfy_fp8_linear("enc.layer0", (16, 16)))
    r = run_cli("check", tmp_path / "x.safetensors", "--report", tmp_path / "no-such-folder" / "check.log")
    assert r.exit_code == 1 and r.stderr.strip().startswith("fp8stream: error: --report "), r.stderr


def test_a_pipe_is_checked_as_the_file(files):
    _, from_file = _check(files["one"])
    r = CliRunner().invoke(main, ["check", "-", *PASS, "--json"], input=files["one"].read_bytes(),
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["end_to_end"] == from_file["end_to_end"] and doc["verdict"] == from_file["verdict"]


class _At:
    """A stand-in for the engine's lockstep: the call (so the stream) that runs now."""

    def __init__(self) -> None:
        self.call = 0

    def index(self) -> int:
        return self.call


def test_rows_of_two_weights_get_each_its_own_scale():
    """A Linear whose rows come from two checkpoint weights with different scales (no single
    input scale fits: quantized row by row after it ran) gives what each weight alone gives; a
    Linear of one scale (its input quantized before it runs) the same as row by row."""
    from types import SimpleNamespace

    from fp8stream.formats.comfy_runtime import LayerRun
    from fp8stream.methods.forward.comparison import Segment, Streams, fp8_round_trip, linear_plan

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(8, 6), torch.randn(5, 8) * 300
    runs = [LayerRun(n, n + ".weight", s, False, "", s, True) for n, s in (("a", 0.5), ("b", 2.0))]
    at = _At()
    streams = Streams(SimpleNamespace(lockstep=at), 1)
    at.call = 1  # stream 2: as ComfyUI runs the file
    mixed = linear_plan([Segment("a.weight", 0, 4, runs[0]), Segment("b.weight", 4, 6, runs[1])], 6)
    handles = [linear.register_forward_pre_hook(streams.pre_hook(mixed)),
               linear.register_forward_hook(streams.post_hook(mixed), prepend=True)]
    with torch.no_grad():
        got = linear(x)
        want = torch.cat([torch.nn.functional.linear(fp8_round_trip(x, s), linear.weight[a:b], linear.bias[a:b])
                          for s, a, b in ((0.5, 0, 4), (2.0, 4, 6))], -1)
        assert mixed.comfy_whole is None and torch.allclose(got, want, rtol=1e-5, atol=1e-3)
        for h in handles:
            h.remove()
        whole = linear_plan([Segment("a.weight", 0, 6, runs[0])], 6)
        row_by_row = SimpleNamespace(segments=whole.segments, comfy_whole=None, dynamic_whole=False)
        outs = []
        for plan in (whole, row_by_row):
            handles = [linear.register_forward_pre_hook(streams.pre_hook(plan)),
                       linear.register_forward_hook(streams.post_hook(plan), prepend=True)]
            outs.append(linear(x))
            for h in handles:
                h.remove()
    assert whole.comfy_whole == 0.5 and torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-3)
    assert not torch.allclose(outs[0], linear(x), rtol=1e-3)  # the scale clips: FP8 is visible


def test_a_text_encoder_runs_weight_only_in_comfyui(tmp_path):
    """ComfyUI runs text encoders weight-only whatever the file says: no FP8 error, and no
    sampling time for their samples; dynamic FP8 is still measured beside it."""
    import test_forward_encoders as encoders

    model, _ = encoders._model("t5xxl")
    encoders._write("t5xxl", model, tmp_path / "t5.safetensors")
    args = ["--forward-batch", "3", "--forward-text-tokens", "12", "--forward-threads", "1", "--no-progress"]
    r = run_cli("check", tmp_path / "t5.safetensors", *args, "--json", "--min-sqnr", "20")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["verdict"].startswith("every FP8 layer runs weight-only in ComfyUI")
    assert doc["end_to_end"]["comfy"]["exact"] and doc["end_to_end"]["dynamic"]["sqnr_db"] > 15.0  # measured 26.3
    assert [s["t"] for s in doc["end_to_end"]["comfy"]["per_sample"]] == [None, None, None]
    assert all(not layer["runs_fp8"] and "text encoder" in layer["why"] for layer in doc["layers"])


def test_a_model_whose_output_is_one_tensor_per_sample(tmp_path):
    """HiDream's forward returns a list of per-sample tensors: compared sample by sample too."""
    import families_tiny

    _, state, _ = families_tiny.tiny("hidream")
    families_tiny.write(state, tmp_path / "hidream.safetensors")
    r, doc = _check(tmp_path / "hidream.safetensors")
    assert r.exit_code == 0 and doc["family"] == "hidream"
    assert len(doc["end_to_end"]["comfy"]["per_sample"]) == 3 and doc["end_to_end"]["dynamic"]["sqnr_db"] > 15.0
