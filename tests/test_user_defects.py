"""What a new user trips over (issue 10): each test runs the CLI as a user would and checks what
the user sees (exit code, the one line on stderr, files left on disk)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, run_subprocess


def test_exclude_output_passes_our_own_verify(small_model: Path, tmp_path: Path) -> None:
    """--exclude sets the weight-only flag, which lengthens the marker: verify must accept it."""
    out = tmp_path / "out.safetensors"
    r = run_cli("calibrate", "--method", "simulate", small_model, out, "--exclude", "*mlp.2", "--verify")
    assert r.exit_code == 0, r.output
    r = run_cli("verify", small_model, out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    marker = [d for d in doc["differences"] if d["name"] == "blocks.0.mlp.2.comfy_quant"]
    assert marker and marker[0]["expected"], doc
    assert "full_precision_matrix_mult set" in marker[0]["detail"]


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fp8stream: error: "), stderr
    return lines[0]


def test_click_usage_errors_are_one_line(small_model: Path, tmp_path: Path) -> None:
    for args in (["calibrate", "--bogus", small_model, tmp_path / "o"], ["calibrate"],
                 ["calibrate", "--method", "nope", small_model, tmp_path / "o"], ["inspect"]):
        r = run_subprocess(*args)
        assert r.returncode == 2, r.stderr
        line = _one_error_line(r.stderr)
        assert "--help" in line


def test_batch_failure_lines_carry_the_error_prefix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    r = run_subprocess("calibrate", "--method", "simulate", bad, "--out-dir", tmp_path / "out")
    assert r.returncode == 1
    assert _one_error_line(r.stderr).startswith(f"fp8stream: error: {bad}: failed:")


def test_a_memory_budget_below_any_run_is_a_usage_error(small_model: Path, tmp_path: Path) -> None:
    r = run_subprocess("calibrate", "--method", "simulate", "--max-memory", "1K", small_model,
                       "--out-dir", tmp_path / "newdir")
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert "--max-memory 1K" in line and "300 MB" in line and "-300" not in line
    assert not (tmp_path / "newdir").exists()


NOT_SAFETENSORS = {
    "notes.txt": (b"hello, these are my notes\n", "a text file"),
    "photo.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "a PNG image"),
    "config.json": (b'{"_class_name": "FluxTransformer2DModel", "num_layers": 19}', "not a shard index"),
    # named like a checkpoint: recognised by its content, not its name
    "model.safetensors": (b'{"hidden_size": 64}\n', "not a shard index"),
}


def test_calibrate_says_what_a_non_safetensors_file_looks_like(tmp_path: Path) -> None:
    for name, (data, what) in NOT_SAFETENSORS.items():
        path = tmp_path / name
        path.write_bytes(data)
        r = run_subprocess("calibrate", "--method", "simulate", path, tmp_path / "out.safetensors")
        assert r.returncode == 1
        line = _one_error_line(r.stderr)
        assert "not a safetensors file" in line and what in line, line
        assert "header length" not in line


def _write_two_shards(folder: Path) -> Path:
    from conftest import small_model_tensors
    from fp8stream.synthetic.checkpoint import write_checkpoint

    tensors = small_model_tensors(input_scale=1.0)
    folder.mkdir()
    shard_of = {t.name: "m-1.safetensors" if ".mlp." not in t.name else "m-2.safetensors" for t in tensors}
    for shard in sorted(set(shard_of.values())):
        write_checkpoint(str(folder / shard), [t for t in tensors if shard_of[t.name] == shard])
    index = folder / "m.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": shard_of}))
    return index


def test_inspect_shows_scale_values_placeholders_flags_and_flavour(small_model: Path, tmp_path: Path) -> None:
    """Before: placeholders everywhere (1.0); after --exclude: calibrated scales, one layer
    weight-only; read from a .zst output, a sharded folder and its index alike."""
    from conftest import small_model_tensors
    from fp8stream.synthetic.checkpoint import write_checkpoint

    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), small_model_tensors(input_scale=1.0))
    before = json.loads(run_cli("inspect", "--json", src).stdout)["fp8_layers"]
    assert {(layer["input_scale_value"], layer["input_scale_placeholder"], layer["weight_only"], layer["flavour"])
            for layer in before} == {(1.0, True, False, "comfy")}
    out = tmp_path / "out.safetensors.zst"
    assert run_cli("calibrate", "--method", "simulate", src, out, "--exclude", "*mlp.2").exit_code == 0
    r = run_cli("inspect", "--json", out)
    assert r.exit_code == 0, r.output
    after = {layer["name"]: layer for layer in json.loads(r.stdout)["fp8_layers"]}
    assert after["blocks.0.mlp.2"]["weight_only"] is True
    assert after["blocks.0.mlp.0"]["weight_only"] is False
    assert after["blocks.0.mlp.0"]["input_scale_placeholder"] is False
    assert 0 < after["blocks.0.mlp.0"]["input_scale_value"] != 1.0
    text = run_cli("inspect", out).stdout
    assert "weight-only" in text and "(calibrated)" in text and "zstd" in text
    index = _write_two_shards(tmp_path / "sharded")
    for given in (index, index.parent):
        r = run_cli("inspect", "--json", given)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["shards"] == 2 and len(doc["fp8_layers"]) == 3, doc
        assert all(layer["input_scale_placeholder"] for layer in doc["fp8_layers"])


def test_inspect_says_what_a_non_safetensors_file_looks_like(tmp_path: Path) -> None:
    for name, (data, what) in NOT_SAFETENSORS.items():
        path = tmp_path / name
        path.write_bytes(data)
        r = run_subprocess("inspect", path)
        assert r.returncode == 1
        line = _one_error_line(r.stderr)
        assert "not a safetensors file" in line and what in line, line


def test_a_pattern_matching_no_layer_is_a_usage_error(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    for option in ("--include", "--exclude"):
        r = run_subprocess("calibrate", "--method", "simulate", small_model, out, option, "nomatch*")
        assert r.returncode == 2
        line = _one_error_line(r.stderr)
        assert f"{option} 'nomatch*' matches no layer" in line and "blocks.0.mlp.0" in line
        assert not out.exists()


def test_a_pattern_missing_some_files_of_a_batch_is_a_note(tmp_path: Path) -> None:
    from conftest import small_model_tensors
    from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_checkpoint(str(a), small_model_tensors())
    write_checkpoint(str(b), comfy_fp8_linear("other.proj", (16, 16), seed=1))
    r = run_cli("calibrate", "--method", "simulate", "--json", a, b, "--out-dir", tmp_path / "out",
                "--exclude", "*mlp.2")
    assert r.exit_code == 0, r.output
    docs = {Path(d["input"]).name: d for d in map(json.loads, r.stdout.splitlines())}
    assert "--exclude '*mlp.2' matches no layer of this file" in docs["b.safetensors"]["notes"]
    assert not any("matches no layer" in n for n in docs["a.safetensors"]["notes"])
    r = run_subprocess("calibrate", "--method", "simulate", a, b, "--out-dir", tmp_path / "out2",
                       "--exclude", "*nomatch")
    assert r.returncode == 2 and "any of the 2 inputs" in _one_error_line(r.stderr)
    assert not (tmp_path / "out2").exists()


def test_no_empty_out_dir_when_nothing_is_written(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    r = run_subprocess("calibrate", "--method", "simulate", notes, "--out-dir", tmp_path / "newdir")
    assert r.returncode == 1
    assert not (tmp_path / "newdir").exists()


def test_report_summarises_each_warning_once_with_its_fix_and_says_what_next(tmp_path: Path) -> None:
    from fp8stream.synthetic.example import write_example

    src, out = tmp_path / "example.safetensors", tmp_path / "calibrated.safetensors"
    write_example(str(src), hidden=64)
    r = run_cli("calibrate", "--method", "simulate", src, out)
    assert r.exit_code == 0, r.output
    table = r.stderr
    warnings = [line for line in table.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(set(warnings)) and len(warnings) <= 4, table  # not one per layer
    extreme = [line for line in warnings if "extreme estimated range" in line]
    assert len(extreme) == 1 and "layers:" in extreme[0], table
    fix = table.splitlines()[table.splitlines().index(extreme[0]) + 1]
    assert fix.strip().startswith("fix: keep them weight-only: --exclude") and "'double_blocks.*.img_mlp.2'" in fix, fix
    assert f"next: put {out} in ComfyUI/models/diffusion_models/" in table
    assert "fp8 act: yes" in table and "weight-only" in table
    # The fix works: passing the suggested excludes leaves no such warning.
    excludes = [a.strip().strip("'") for a in fix.split("--exclude ")[1:]]
    args = [x for e in excludes for x in ("--exclude", e)]
    r = run_cli("calibrate", "--method", "simulate", src, tmp_path / "again.safetensors", *args)
    assert r.exit_code == 0 and "extreme estimated range" not in r.stderr, r.stderr


def test_real_data_scales_are_labelled_measured(small_model: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    layers = {n: {"amax": 3.0, "calls": 5} for n in ("blocks.0.attn.qkv", "blocks.0.mlp.0", "blocks.0.mlp.2")}
    stats.write_text(json.dumps({"format": "fp8stream.stats", "version": 1, "layers": layers}))
    r = run_cli("calibrate", small_model, tmp_path / "o.safetensors", "--stats", stats)  # --stats implies the method
    assert r.exit_code == 0, r.output
    assert "measured: real data max over 5 calls" in r.stderr and "assumed:" not in r.stderr, r.stderr


def test_small_things_plurals_and_sizes(tmp_path: Path) -> None:
    from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint

    src = tmp_path / "one.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear("lin", (64, 64), seed=1))
    r = run_cli("calibrate", "--method", "simulate", src, tmp_path / "o.safetensors")
    assert r.exit_code == 0, r.output
    size = (tmp_path / "o.safetensors").stat().st_size  # a few KB: said as ls -h would, not "0.0 MB"
    assert 4096 < size < 10 * 1024
    assert "1 FP8 layer: 1 with FP8 activations, 0 weight-only; 1 scale calibrated" in r.stderr, r.stderr
    assert f"wrote {size / 1024:.1f} KB" in r.stderr, r.stderr
    assert "0.0 MB" not in r.stderr


def _legacy_flux_with_a_stray_layer(tmp_path: Path) -> Path:
    """A tiny Flux in the legacy scaled_fp8 format, plus one FP8 linear outside the model code:
    the forward pass cannot reach it and its bound would rest on a guess."""
    import torch
    from safetensors.torch import load_file, save_file

    from format_variants import as_flavour, comfy_model
    from fp8stream.harness.fp8 import quantize_weight

    comfy = comfy_model("flux", tmp_path / "comfy.safetensors")
    state = load_file(str(comfy))
    state["model.diffusion_model.stray.proj.weight"], state["model.diffusion_model.stray.proj.weight_scale"] = \
        quantize_weight(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    state["model.diffusion_model.stray.proj.comfy_quant"] = state["model.diffusion_model.img_in.comfy_quant"].clone()
    save_file(state, str(comfy))
    return as_flavour(comfy, "legacy", tmp_path / "legacy.safetensors")


def test_a_legacy_layer_with_no_scale_keeps_the_whole_file_weight_only(tmp_path: Path) -> None:
    """The legacy format cannot flag one layer: rather than guess that layer's scale, the default
    keeps the whole file weight-only through its marker (exit 5), and says what --target comfy adds."""
    from safetensors import safe_open

    from format_variants import FORWARD_ARGS

    src, out = _legacy_flux_with_a_stray_layer(tmp_path), tmp_path / "out.safetensors"
    r = run_cli("calibrate", src, out, *FORWARD_ARGS)
    assert r.exit_code == 5, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["layers"] == [] and doc["status"] == "unscaled"
    note = [n for n in doc["notes"] if "legacy scaled_fp8" in n]
    assert len(note) == 1 and "1 layer gets no scale" in note[0] and "--target comfy" in note[0], doc["notes"]
    with safe_open(str(out), "pt") as f:
        assert f.get_slice("model.diffusion_model.scaled_fp8").get_shape() == [2]  # every layer weight-only
        assert not any(k.endswith("scale_input") for k in f.keys())
    r = run_cli("calibrate", src, out, "--force", "--target", "comfy", *FORWARD_ARGS)
    assert r.exit_code == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert [e["name"] for e in doc["excluded"]] == ["model.diffusion_model.stray.proj"]
    assert sum(1 for layer in doc["layers"] if layer["fp8_activations"]) > len(doc["layers"]) // 2


def test_what_a_legacy_file_cannot_express_on_request_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    from format_variants import FORWARD_ARGS, as_flavour, comfy_model

    comfy = comfy_model("flux", tmp_path / "comfy.safetensors")
    legacy = as_flavour(comfy, "legacy", tmp_path / "legacy.safetensors")
    plain = as_flavour(comfy, "plain", tmp_path / "plain.safetensors")
    for src, args in ((legacy, ("--exclude", "*img_in")), (plain, ("--target", "legacy", "--exclude", "*img_in"))):
        r = run_cli("calibrate", src, tmp_path / "out.safetensors", *args, *FORWARD_ARGS)
        assert r.exit_code == 2, r.stderr
        assert "--target comfy" in _one_error_line(r.stderr)
    r = run_cli("calibrate", comfy, tmp_path / "out.safetensors", "--target", "legacy", *FORWARD_ARGS)
    assert r.exit_code == 2 and "not supported" in _one_error_line(r.stderr)
    assert not (tmp_path / "out.safetensors").exists()
