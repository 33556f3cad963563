"""The default on every format x every family the suite builds (issue 22 items 1, 3 and 4).

A legacy scaled_fp8 or plain FP8 file is written with exit code 0 (5 where no family is known:
no layer scaled, no scale guessed) and one note saying what was done with the format. ComfyUI's
format keeps the conditioning path weight-only with its measured scale beside the flag; the
legacy format cannot flag one layer, so those layers run FP8 there with that same scale. Every
input scale written on a weight-only layer is the one the report gives it, or there is none:
never a placeholder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import run_cli
from format_variants import FAMILIES, FORWARD_ARGS, NO_GUESS, as_flavour, comfy_model, decisions, fp8_layers

RUNS = (("comfy", "comfy", ()), ("legacy", "legacy", ()), ("plain", "plain", ()),
        ("plain as legacy", "plain", ("--target", "legacy")), ("legacy as comfy", "legacy", ("--target", "comfy")))


def _written(path: Path) -> tuple[dict, set[str], bool]:
    """(each layer's comfy_quant doc, the tensor names, whether a legacy marker makes every layer weight-only)."""
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        docs = {n.removesuffix(".comfy_quant"): json.loads(bytes(f.get_tensor(n).tolist()))
                for n in names if n.endswith(".comfy_quant")}
        marker = [n for n in names if n == "scaled_fp8" or n.endswith(".scaled_fp8")]
        whole = bool(marker) and f.get_slice(marker[0]).get_shape() == [2]
    return docs, names, whole


def _input_scales(path: Path) -> dict[str, float]:
    with safe_open(str(path), "pt") as f:
        return {n.rsplit(".", 1)[0]: f.get_tensor(n).item() for n in f.keys()
                if n.endswith((".input_scale", ".scale_input"))}


def _check_weight_only_scales(path: Path, doc: dict, layers: list[str]) -> None:
    """Every input scale on a layer written weight-only equals the scale reported for it, or is absent."""
    docs, _, whole = _written(path)
    reported = {layer["name"]: layer["scale"] for layer in doc["layers"]}
    scales = _input_scales(path)
    for name in layers:
        weight_only = whole or docs.get(name, {}).get("full_precision_matrix_mult", False)
        if weight_only and name in scales:
            assert scales[name] == pytest.approx(reported.get(name), rel=1e-6), (name, scales[name], reported.get(name))


def _dry_run(src: Path, out: Path, target: tuple[str, ...], monkeypatch) -> tuple[int, dict]:
    """`--dry-run` of the same command: it runs no forward pass and writes nothing."""
    import fp8stream.methods.forward.forward_pass as forward_run

    def no_pass(*args, **kwargs):
        raise AssertionError("a dry run ran the forward pass")

    with monkeypatch.context() as m:
        m.setattr(forward_run, "run", no_pass)
        r = run_cli("calibrate", "--dry-run", src, out, *target, *FORWARD_ARGS)
    assert not out.exists(), r.stderr[-2000:]
    return r.exit_code, json.loads(r.stdout)


def _same_decisions(dry: tuple[int, dict], done: dict, run: str) -> None:
    """The dry run decides every layer (scaled, weight-only, excluded) and the exit code as the run
    does, but for the layers it names as undecided (model code that cannot run on meta tensors)."""
    code, planned = dry
    assert code == done["exit_code"], run
    undecided = set(planned["undecided"])
    assert {n: d for n, d in decisions(planned).items() if n not in undecided} == \
        {n: d for n, d in decisions(done).items() if n not in undecided}, run
    assert sorted(decisions(planned)) == sorted(decisions(done)), run
    assert planned["bytes_out"] == done["bytes_out"] or undecided, run


@pytest.mark.parametrize("family", FAMILIES)
def test_the_default_writes_every_format_of_every_family(family: str, tmp_path: Path, monkeypatch) -> None:
    """Every format x every family: the run's exit code, its note, its scales on weight-only
    layers; and its dry run's decisions (issue 22 item 3: tested here, where the runs are)."""
    comfy = comfy_model(family, tmp_path / "comfy.safetensors")
    layers = fp8_layers(comfy)
    sources = {"comfy": comfy, "legacy": as_flavour(comfy, "legacy", tmp_path / "legacy.safetensors"),
               "plain": as_flavour(comfy, "plain", tmp_path / "plain.safetensors")}
    docs = {}
    for run, flavour, target in RUNS:
        out = tmp_path / f"{run.replace(' ', '-')}.out.safetensors"
        dry = _dry_run(sources[flavour], out, target, monkeypatch)
        r = run_cli("calibrate", sources[flavour], out, *target, *FORWARD_ARGS)
        assert r.exit_code == (5 if family in NO_GUESS else 0), (run, r.stderr[-2000:])
        doc = docs[run] = json.loads(r.stdout)
        assert sorted(decisions(doc)) == layers, run
        _same_decisions(dry, doc, run)
        _check_weight_only_scales(out, doc, layers)
        if family in NO_GUESS:  # no guess: no scale written at all, every layer weight-only
            assert doc["layers"] == [] and not _input_scales(out), run
            docs_, _, whole = _written(out)
            assert whole or all(d.get("full_precision_matrix_mult") for d in docs_.values()), run
        elif run in ("legacy", "plain", "plain as legacy"):  # what was done with the format, in one note
            said = [n for n in doc["notes"] if "legacy scaled_fp8" in n or "plain FP8" in n]
            assert len(said) == 1, (run, doc["notes"])
    if family in NO_GUESS:
        return
    kept = {n for n, d in decisions(docs["comfy"]).items() if d == "weight-only"}
    measured = {layer["name"]: layer["scale"] for layer in docs["comfy"]["layers"]}
    for run in ("plain", "legacy as comfy"):  # ComfyUI's format whatever the input's: the same decisions
        assert decisions(docs[run]) == decisions(docs["comfy"]), run
    for run in ("legacy", "plain as legacy"):  # every layer scaled: the format cannot flag one
        doc = docs[run]
        assert doc["excluded"] == [] and all(layer["scale"] for layer in doc["layers"]), run
        assert all(layer["fp8_activations"] for layer in doc["layers"] if layer["name"] not in kept or
                   layer["name"] in measured and not any("text encoder" in n for n in layer["notes"])), run
        note = next(n for n in doc["notes"] if "legacy scaled_fp8" in n)
        conditioning = [n for n in kept if "conditioning path" in json.dumps(docs["comfy"]["layers"])]
        assert ("--target comfy" in note) and (("measured scale" in note) == bool(conditioning)), note
    legacy = {layer["name"]: layer["scale"] for layer in docs["legacy"]["layers"]}
    for name in kept:  # the scale measured for the layer, whether the flag is written beside it or not
        assert legacy[name] == pytest.approx(measured[name], rel=1e-6), name


def _with_placeholders(comfy: Path, path: Path) -> Path:
    """As Comfy-Org's exporter writes FP8 files: every layer flagged weight-only with input_scale 1.0."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(comfy))
    flag = torch.tensor(list(json.dumps({"format": "float8_e4m3fn", "full_precision_matrix_mult": True}).encode()),
                        dtype=torch.uint8)
    for name in [n for n in state if n.endswith(".comfy_quant")]:
        layer = name.removesuffix(".comfy_quant")
        state[name], state[layer + ".input_scale"] = flag.clone(), torch.tensor(1.0)
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("family", ("flux", "hidream", "unknown"))
def test_no_placeholder_scale_stays_on_a_weight_only_layer(family: str, tmp_path: Path) -> None:
    """A layer the default keeps weight-only carries the scale measured for it (a runtime that
    reads the scale and not the flag runs with it), or none: never the 1.0 the file came with."""
    src = _with_placeholders(comfy_model(family, tmp_path / "comfy.safetensors"), tmp_path / "in.safetensors")
    out = tmp_path / "out.safetensors"
    r = run_cli("calibrate", src, out, *FORWARD_ARGS)
    assert r.exit_code == (5 if family in NO_GUESS else 0), r.stderr[-2000:]
    doc, layers = json.loads(r.stdout), fp8_layers(src)
    _check_weight_only_scales(out, doc, layers)
    docs, _, _ = _written(out)
    flagged = {n for n in layers if docs[n].get("full_precision_matrix_mult")}
    scales = _input_scales(out)
    assert flagged and 1.0 not in scales.values()
    if family in NO_GUESS:
        assert not scales
    else:  # the conditioning path: flagged, with its measured scale beside the flag
        assert flagged <= set(scales) and all(r["assumption"].startswith(f"{family} forward amax")
                                              for r in doc["layers"] if r["name"] in flagged)
