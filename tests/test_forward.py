"""--method forward: the streaming forward pass is exact, reaches every layer, and plugs into the CLI."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest
import torch
from safetensors import safe_open

import forward_tiny as ft  # noqa: E402
from conftest import run_cli  # noqa: E402
from fp8stream.errors import UsageError  # noqa: E402
from fp8stream.families import by_name  # noqa: E402
from fp8stream.families.samples import SamplePlan  # noqa: E402
from fp8stream.io.reader import LazyFile  # noqa: E402
from fp8stream.io.source import TensorSource  # noqa: E402
from fp8stream.methods.forward.forward_pass import PassSettings, prepare, run  # noqa: E402
from fp8stream.methods.forward.mapping import derive_mapping  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = PassSettings(batch=3, image_tokens=16, text_tokens=8, threads=1)
FAMILIES = ["flux", "sd3", "wan"]


def _checkpoint(family: str, path: Path, prefix: str = ""):
    model, state, cfg = ft.tiny(family)
    layers = ft.write(state, path, prefix)
    return model, state, cfg, layers


def _dequantized(state: dict, layers: list[str]) -> dict:
    """The original state with every FP8 layer's weight as ComfyUI runs it (dequantized)."""
    out = dict(state)
    for n in layers:
        w8, s = ft.qm.quantize_weight(state[n + ".weight"])
        out[n + ".weight"] = w8.float() * s
    return out


def _eager_amax(family: str, model, state: dict, layers: list[str], cfg: dict) -> dict[str, float]:
    fam = by_name(family).model
    converted = fam.convert({k: v.clone() for k, v in _dequantized(state, layers).items()}, cfg)
    missing, unexpected = model.load_state_dict({k: v for k, v in converted.items()
                                                 if k in dict(model.named_parameters())}, strict=False)
    assert not [m for m in missing if m in dict(model.named_parameters())]
    plan = SamplePlan(SMALL.batch, SMALL.image_tokens, SMALL.text_tokens, SMALL.seed)
    amax: dict[str, float] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, _n=n: amax.__setitem__(_n, float(a[0].abs().max())))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(**fam.inputs(cfg, plan), return_dict=False)
    for h in hooks:
        h.remove()
    return amax


def _run(path: Path):
    with LazyFile(str(path)) as f:
        header = f.header
    with TensorSource.for_file(str(path), header) as src:
        return run(src, prepare(header), SMALL)


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_pass_equals_eager_run(family, tmp_path):
    """Every Linear's recorded input amax equals a full-precision eager diffusers run with the
    dequantized weights on the same inputs, with one Linear weight live at a time."""
    path = tmp_path / f"{family}.safetensors"
    model, state, cfg, layers = _checkpoint(family, path)
    result = _run(path)
    assert result.family == family and result.reason is None
    assert result.peak_live == 1  # one weight materialised at a time
    eager = _eager_amax(family, model, state, layers, cfg)
    assert set(result.module_amax) == set(eager)
    for name, a in eager.items():
        assert result.module_amax[name] == pytest.approx(a, rel=1e-5, abs=1e-6), name
    assert result.weights_read == len(eager)  # each Linear's rows read once
    assert sorted(n[:-7] for n in result.amax) == sorted(layers)  # every FP8 layer reached


def test_attention_outputs_get_the_mix_bound(tmp_path):
    """An attention output projection's amax is at least the largest value it mixes (the
    attention weights are convex): synthetic inputs make attention more diffuse than real ones."""
    path = tmp_path / "flux.safetensors"
    _checkpoint("flux", path)
    r = _run(path)
    a = "transformer_blocks.0.attn."
    mix = max(r.module_out_amax[a + "to_v"], r.module_out_amax[a + "add_v_proj"])
    assert mix > r.module_amax[a + "to_out.0"]  # diffuse synthetic attention falls short of it
    assert r.amax["double_blocks.0.img_attn.proj.weight"] == pytest.approx(mix)
    s = "single_transformer_blocks.1."
    want = max(r.module_amax[s + "proj_out"], r.module_out_amax[s + "attn.to_v"])
    assert r.amax["single_blocks.1.linear2.weight"] == pytest.approx(want)


def test_flux_mapping_matches_the_hand_written_map():
    _, state, cfg = ft.tiny("flux")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    fam = by_name("flux").model
    mapping = derive_mapping(shapes, "", lambda st: fam.convert(st, cfg))
    for lm in ft.qm.flux_linear_maps(cfg):
        runs = [r for part in lm.parts for r in mapping[part + ".weight"]]
        assert {r.source for r in runs} == {lm.comfy + ".weight"}
        starts = [r.start for r in runs]
        rows = shapes[lm.comfy + ".weight"][0]
        if lm.swap_halves:  # diffusers' norm_out = (scale, shift), BFL's = (shift, scale)
            assert starts == [rows // 2, 0]
        else:
            assert starts == sorted(starts) and runs[-1].stop == rows


def _cli(*args: str):
    """In-process (diffusers is imported once for the whole file): exit_code, stdout, stderr."""
    return run_cli("calibrate", *args)


def _forward_args() -> list[str]:
    return ["--method", "forward", "--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8",
            "--forward-threads", "1", "--json", "--no-progress"]


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_every_layer_from_the_forward_pass_and_deterministic(family, tmp_path):
    src = tmp_path / "in.safetensors"
    _, _, _, layers = _checkpoint(family, src, prefix="model.diffusion_model.")
    outs = []
    for i in range(2 if family == "flux" else 1):  # determinism: one family is enough
        out = tmp_path / f"out{i}.safetensors"
        p = _cli(str(src), str(out), *_forward_args())
        assert p.exit_code == 0, p.stderr[-2000:]
        outs.append(out.read_bytes())
    report = json.loads(p.stdout)
    got = {r["name"]: r for r in report["layers"]}
    kept = {name: r for name, r in got.items() if not r["fp8_activations"]}
    # every layer gets its scale from the pass; the conditioning path is kept weight-only beside it
    assert sorted(got) == sorted(layers) and report["excluded"] == []
    assert len(kept) <= len(layers) // 4
    assert all("conditioning path" in json.dumps(r) for r in kept.values()), kept
    if family == "flux":
        assert any("img_mod" in n or "time_in" in n or "guidance_in" in n for n in kept), sorted(kept)
    for r in got.values():
        assert r["method"] == "forward"
        assert r["assumption"].startswith(f"{family} forward amax") and r["basis"] == "forward pass", r
        assert not any("not reached" in w or "ASSUMED" in w for w in r["warnings"]), r
    assert outs[0] == outs[-1]  # same bytes twice
    with LazyFile(str(tmp_path / "out0.safetensors")) as f:
        meta = f.header.metadata or {}
    assert "diffusers" in json.dumps(meta) and "forward" in json.dumps(meta)


def test_conditioning_fp8_scales_every_layer(tmp_path):
    """--forward-conditioning fp8: the conditioning path gets forward-pass scales too."""
    src = tmp_path / "in.safetensors"
    _, _, _, layers = _checkpoint("flux", src)
    p = _cli(str(src), str(tmp_path / "out.safetensors"), *_forward_args(), "--forward-conditioning", "fp8")
    assert p.exit_code == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert sorted(r["name"] for r in report["layers"]) == sorted(layers) and report["excluded"] == []
    assert all(r["assumption"].startswith("flux forward amax") for r in report["layers"])
    # the layers kept weight-only by default change no other layer's scale (the bound that caps
    # a scale still sees their weights as producers)
    p = _cli(str(src), str(tmp_path / "default.safetensors"), *_forward_args())
    assert p.exit_code == 0, p.stderr[-2000:]
    default = json.loads(p.stdout)
    assert any(not r["fp8_activations"] for r in default["layers"])
    assert all(r["fp8_activations"] for r in report["layers"])
    fp8 = {r["name"]: r["scale"] for r in report["layers"]}
    assert all(r["scale"] == fp8[r["name"]] for r in default["layers"])


def test_weight_only_conditioning_changes_no_other_scale(tmp_path):
    """On the trained tiny Flux (its bounds are tight enough to cap): the layers kept weight-only
    by default still stream past as producers of the bound's model, so every other layer gets
    the scale it gets when nothing is kept weight-only."""
    from safetensors.torch import load_file

    from fp8stream.harness.checkpoint import write_fp8_checkpoint

    state = load_file(str(Path(__file__).parent / "data" / "tiny_flux" / "tiny_flux.safetensors"))
    src = tmp_path / "tiny_flux_fp8.safetensors"
    write_fp8_checkpoint(state, [k[:-7] for k, v in state.items() if k.endswith(".weight") and v.dim() == 2], src)
    reports = {}
    for mode in ("weight-only", "fp8"):
        p = _cli(str(src), str(tmp_path / f"{mode}.safetensors"), "--method", "forward", "--forward-threads", "1",
                 "--json", "--no-progress", "--forward-conditioning", mode)
        assert p.exit_code == 0, p.stderr[-2000:]
        reports[mode] = json.loads(p.stdout)
    assert any(not r["fp8_activations"] for r in reports["weight-only"]["layers"])
    assert all(r["fp8_activations"] for r in reports["fp8"]["layers"])
    fp8 = {r["name"]: r["scale"] for r in reports["fp8"]["layers"]}
    assert all(r["scale"] == fp8[r["name"]] for r in reports["weight-only"]["layers"])


def test_sharded_model_gets_the_scales_of_the_single_file(tmp_path):
    """Shards read each other's tensors by positioned reads; one pass serves every shard."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    single = tmp_path / "single.safetensors"
    _checkpoint("flux", single)
    with safe_open(str(single), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    folder = tmp_path / "sharded"
    folder.mkdir()
    weight_map = {}
    for shard, keep in (("model-00001-of-00002.safetensors", True), ("model-00002-of-00002.safetensors", False)):
        part = {k: v for k, v in sd.items() if k.startswith("double_blocks.") == keep}
        save_file(part, str(folder / shard))
        weight_map.update({k: shard for k in part})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "out").mkdir()
    p = _cli(str(index), str(tmp_path / "out" / index.name), *_forward_args())
    assert p.exit_code == 0, p.stderr
    sharded = {r["name"]: r["scale"] for line in p.stdout.splitlines() if line.startswith("{")
               for r in json.loads(line)["layers"]}
    p = _cli(str(single), str(tmp_path / "single_out.safetensors"), *_forward_args())
    assert p.exit_code == 0, p.stderr
    assert sharded == {r["name"]: r["scale"] for r in json.loads(p.stdout)["layers"]}


def test_unknown_family_is_kept_weight_only_unless_an_input_rms_is_assumed(tmp_path):
    """No guess by default: a layer the forward pass cannot reach, whose bound would rest on an
    assumed input range, is written weight-only with the reason; --assume-input-rms opts in."""
    src = tmp_path / "in.safetensors"
    ft.qm.write_fp8_checkpoint({"enc.layer.weight": torch.randn(16, 8), "enc.layer.bias": torch.randn(16)},
                               ["enc.layer"], src)
    out = tmp_path / "out.safetensors"
    p = _cli(str(src), str(out), *_forward_args())
    assert p.exit_code == 5, p.stderr  # written, no layer scaled
    report = json.loads(p.stdout)
    assert report["layers"] == [] and report["status"] == "unscaled"
    (kept,) = report["excluded"]
    assert "model family not recognised" in json.dumps(kept) and "--assume-input-rms" in json.dumps(kept)
    with safe_open(str(out), "pt") as f:
        assert "enc.layer.input_scale" not in f.keys()
        marker = json.loads(bytes(f.get_tensor("enc.layer.comfy_quant").tolist()))
    assert marker.get("full_precision_matrix_mult") is True
    p = _cli(str(src), str(tmp_path / "assumed.safetensors"), *_forward_args(), "--assume-input-rms", "2")
    assert p.exit_code == 0, p.stderr
    (r,) = json.loads(p.stdout)["layers"]
    assert any("not reached by the forward pass (model family not recognised" in w for w in r["warnings"])
    assert any("ASSUMED" in w and "rms <= 2" in w for w in r["warnings"])


def test_missing_diffusers_says_how_to_install(monkeypatch):
    from fp8stream.methods.forward.diffusers_import import INSTALL_HINT, import_diffusers

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(UsageError, match=r"pip install fp8stream\[forward\]"):
        import_diffusers()
    assert "\n" not in INSTALL_HINT


def test_a_diffusers_that_cannot_be_imported_says_so_and_auto_falls_back(tmp_path, monkeypatch):
    """An installed diffusers whose import fails (its lazy modules say so with a RuntimeError) is
    not called missing, and the default runs the bound instead, saying why."""
    from fp8stream.methods.forward import diffusers_import

    def broken() -> None:
        raise RuntimeError("Failed to import diffusers.loaders.peft")

    monkeypatch.setattr(diffusers_import, "_import_diffusers_models", broken)
    with pytest.raises(UsageError, match=r"diffusers is installed but cannot be imported \(Failed to import"):
        diffusers_import.import_diffusers()
    p = _cli(str(ft.comfy_file("flux", tmp_path)), str(tmp_path / "out.safetensors"), "--json", "--no-progress")
    assert p.exit_code == 0, p.stderr[-2000:]
    assert "cannot be imported" in p.stderr + p.stdout


def test_the_pass_beside_the_copy_writes_the_same_bytes_and_the_layout_comes_from_the_header(tmp_path, monkeypatch):
    """On a GPU the pass runs on a thread where the copy streams (--verify keeps the stream;
    forward_method.BesideTheCopy): forced here on the CPU, it writes the bytes the pass before
    the copy at fixed places writes. The layout
    (which layers are the conditioning path) is fixed before any weight is read: the pass on
    meta tensors finds the layers the real pass finds. An error in the pass ends the run with
    one line and no output."""
    import fp8stream.methods.forward.forward_method as forward_method
    import fp8stream.methods.forward.forward_pass as forward_run

    src = tmp_path / "in.safetensors"
    _checkpoint("flux", src)
    after = tmp_path / "after.safetensors"
    p = _cli(str(src), str(after), *_forward_args())
    assert p.exit_code == 0, p.stderr[-2000:]
    monkeypatch.setattr(forward_method, "beside_the_copy", lambda settings: True)
    threads, real_run = [], forward_run.run

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(forward_run, "run", recorded)
    beside = tmp_path / "beside.safetensors"
    p = _cli(str(src), str(beside), "--verify", *_forward_args())
    assert p.exit_code == 0, p.stderr[-2000:]
    assert threads == ["forward pass"] and beside.read_bytes() == after.read_bytes()
    kept = [r for r in json.loads(p.stdout)["layers"] if not r["fp8_activations"]]
    assert kept and all("conditioning path" in json.dumps(r) for r in kept)

    def failing(*args, **kwargs):  # fails on the pass's thread only: a lost error cannot pass
        threads.append(threading.current_thread().name)
        if threading.current_thread().name == "forward pass":
            raise UsageError("the pass failed")
        return real_run(*args, **kwargs)

    threads.clear()
    monkeypatch.setattr(forward_run, "run", failing)
    failed = tmp_path / "failed.safetensors"
    p = _cli(str(src), str(failed), "--verify", *_forward_args())
    assert p.exit_code != 0 and "the pass failed" in p.stderr and "Traceback" not in p.stderr
    assert threads == ["forward pass"]  # the error came from the thread, and no second pass ran
    assert not failed.exists() and not list(tmp_path.glob("*.tmp*"))


def test_a_failed_copy_stops_the_pass_beside_it(tmp_path, monkeypatch):
    """A run whose copy fails part way closes its method: the pass beside the copy is told to
    stop and its thread is gone before the run returns, so nothing of it runs on into the next
    file of a batch."""
    import fp8stream.methods.forward.forward_method as forward_method
    import fp8stream.methods.forward.forward_pass as forward_run
    import fp8stream.pipeline.run as pipeline_run
    from fp8stream.methods.forward.engine import PassStopped

    src = tmp_path / "in.safetensors"
    _checkpoint("flux", src)
    monkeypatch.setattr(forward_method, "beside_the_copy", lambda settings: True)
    told = []

    def waits_to_be_stopped(source, prepared, settings, stop=None):
        told.append(stop.wait(timeout=30))  # the pass is still running when the copy fails
        raise PassStopped("stopped")

    def copy_fails(*args, **kwargs):
        raise UsageError("the copy failed")

    monkeypatch.setattr(forward_run, "run", waits_to_be_stopped)
    monkeypatch.setattr(pipeline_run, "stream_model", copy_fails)
    out = tmp_path / "out.safetensors"
    p = _cli(str(src), str(out), "--verify", *_forward_args())  # a streamed copy: the pass beside it
    assert p.exit_code != 0 and "the copy failed" in p.stderr and "Traceback" not in p.stderr
    assert told == [True] and not any(t.name == "forward pass" for t in threading.enumerate())
    assert not out.exists()
