"""The report a person reads (issue 22): layers that share a reason said once, with their names as
brace patterns that expand to exactly those layers; the same layer counts in the table, `--json`
and `inspect`; per-layer detail under `--verbose`; and a next step that fits the output."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import forward_tiny as ft
from conftest import run_cli, small_model_tensors, subprocess_env

from fp8stream.name_patterns import compact_names
from fp8stream.report import ExcludedReport, FileReport, LayerReport
from fp8stream.report_table import render_table
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.synthetic.inventories import flux_dev

SMALL_PASS = ("--forward-batch", "1", "--forward-tokens", "16", "--forward-text-tokens", "8")  # a quick pass
CONDITIONING = "method: conditioning path (one vector per sample, ...): weight-only"


def expand(pattern: str) -> set[str]:
    """A brace pattern as a shell expands it ({0..3} and {a,b})."""
    parts = re.split(r"(\{[^}]*\})", pattern)
    options = []
    for part in parts:
        if not part.startswith("{"):
            options.append([part])
            continue
        alternatives = []
        for a in part[1:-1].split(","):
            low, dots, high = a.partition("..")
            alternatives += [str(i) for i in range(int(low), int(high) + 1)] if dots else [a]
        options.append(alternatives)
    return {"".join(p) for p in itertools.product(*options)}


def test_brace_patterns_expand_to_exactly_the_names() -> None:
    mods = [f"double_blocks.{i}.{s}_mod.lin" for i in (0, 1) for s in ("img", "txt")]
    assert compact_names(mods) == ["double_blocks.{0,1}.{img,txt}_mod.lin"]
    # Flux-dev at full depth, one layer left out: the patterns still cover exactly what is there.
    names = [n[: -len(".weight")] for n in (s.name for s in flux_dev() if s.fp8)]
    names.remove("double_blocks.6.img_mlp.2")
    patterns = compact_names(names)
    assert len(patterns) <= 12, patterns
    expanded = [expand(p) for p in patterns]
    assert set().union(*expanded) == set(names) and sum(map(len, expanded)) == len(names)


def _full_flux_report() -> FileReport:
    """What a default run on full-width, full-depth Flux-dev reports: its modulation layers
    excluded as the conditioning path, every other layer scaled from its own forward amax."""
    report = FileReport("flux1-dev-fp8.safetensors", "out.safetensors", family={"summary": "flux-dev"})
    for i, spec in enumerate(s for s in flux_dev() if s.fp8):
        name = spec.name[: -len(".weight")]
        if "mod" in name:
            report.excluded.append(ExcludedReport(name, CONDITIONING, False))
            continue
        amax = 100.0 + 7 * i
        report.layers.append(LayerReport(name, list(spec.shape), amax * 3 / 448, "new", "no scale in the file", "auto",
                                         f"flux forward amax {amax:.4g} x margin 3; bound {1e6 + i:.4g} (rests on an "
                                         "assumption: not a cap)", True))
    return report


def test_a_full_size_report_says_each_reason_once_and_fits_a_screen() -> None:
    report = _full_flux_report()
    table = render_table(report)
    lines = table.splitlines()
    assert len(lines) <= 40, table
    assert table.count("conditioning path") == 1 and table.count("rests on an assumption") == 1, table
    n_fp8 = len(report.layers) + len(report.excluded)
    assert f"{n_fp8} FP8 layers: {len(report.layers)} with FP8 activations, {len(report.excluded)} weight-only" in table
    assert lines[-1].startswith("next: put out.safetensors in ComfyUI/models/diffusion_models/")
    verbose = render_table(report, verbose=True)
    assert all(any(line.startswith(layer.name + " ") for line in verbose.splitlines()) for layer in report.layers)


def test_report_json_and_inspect_count_the_same_layers(tmp_path: Path) -> None:
    """The default on a Flux-architecture file: some layers scaled, the conditioning path kept
    weight-only; the table, --json and `inspect` of the output count both alike."""
    src, out = tmp_path / "flux.safetensors", tmp_path / "out.safetensors"
    _, state, _ = ft.tiny("flux")
    layers = ft.write(state, src)
    r = run_cli("calibrate", src, out, "--json", *SMALL_PASS)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    counts = doc["counts"]
    assert counts["fp8_layers"] == len(layers) and counts["fp8_activations"] > 0 and counts["weight_only"] > 0
    inspected = json.loads(run_cli("inspect", "--json", out).stdout)
    assert inspected["counts"] == counts and len(inspected["fp8_layers"]) == len(layers)
    said = (f"{len(layers)} FP8 layers: {counts['fp8_activations']} with FP8 activations, "
            f"{counts['weight_only']} weight-only")
    assert said in run_cli("inspect", out).stdout
    table = run_cli("calibrate", src, out, "--force", *SMALL_PASS).stderr
    assert said in table
    reasons = [line for line in table.splitlines() if "conditioning path" in line]
    assert len(reasons) == 1, table  # one line for every layer it concerns
    verbose = run_cli("calibrate", src, out, "--force", "--verbose", *SMALL_PASS).stderr
    assert doc["excluded"] and all(f"excluded {e['name']}:" in verbose for e in doc["excluded"]), verbose


def test_the_next_step_of_a_compressed_output_says_so(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "--zstd", "-", "-"],
                       input=src.read_bytes(), capture_output=True, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    step = [line for line in r.stderr.decode().splitlines() if line.startswith("next:")]
    assert len(step) == 1 and ".safetensors.zst" in step[0] and "zstd -d" in step[0], step
    out = tmp_path / "m-fp8.safetensors.zst"
    r = run_cli("calibrate", "--method", "simulate", src, out)
    assert r.exit_code == 0, r.output
    assert f"next: decompress it (`zstd -d {out}`), then put {tmp_path / 'm-fp8.safetensors'} in ComfyUI" in r.stderr
