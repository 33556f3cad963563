"""--progress: one line per phase on stderr, in the run's order, each saying what it counts; the
forward pass counts the checkpoint's FP8 layers (not the model's Linears); stdout untouched."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import forward_tiny as ft
from conftest import run_subprocess, subprocess_env

FORWARD = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1"]


def _phases(stderr: str) -> list[tuple[str, str]]:
    """(phase, what its line shows) for each bar update, in order; tqdm redraws with '\\r'."""
    shown = []
    for part in re.split(r"[\r\n]", stderr):
        m = re.match(r"(preparing|spooling input|copying|forward pass, FP8 layers)\b(.*)", part.strip())
        if m:
            shown.append((m.group(1), m.group(2)))
    return shown


def test_progress_shows_each_phase_in_order_and_counts_fp8_layers(tmp_path: Path) -> None:
    src, out = tmp_path / "flux.safetensors", tmp_path / "out.safetensors"
    _, state, _ = ft.tiny("flux")
    layers = ft.write(state, src, "model.diffusion_model.")
    env = dict(subprocess_env(), TQDM_MININTERVAL="0", TQDM_MINITERS="1")  # every update drawn
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", str(src), str(out), *FORWARD, "--progress",
                        "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    json.loads(r.stdout)  # stdout carries the report alone: no bar there
    shown = _phases(r.stderr)
    order = [name for i, (name, _) in enumerate(shown) if i == 0 or shown[i - 1][0] != name]
    # a file to a file on the CPU: the pass first (the copy takes each weight it reads), then the rest copied
    assert order == ["preparing", "forward pass, FP8 layers", "copying"]
    inspected = json.loads(run_subprocess("inspect", str(out), "--json").stdout)
    fp8_layers = len(inspected["fp8_layers"])
    assert fp8_layers == len(layers)
    counts = [re.search(r"(\d+)/(\d+) \[", text) for name, text in shown if name == "forward pass, FP8 layers"]
    assert {int(m.group(2)) for m in counts if m} == {fp8_layers}  # the total: the file's FP8 layers
    assert max(int(m.group(1)) for m in counts if m) == fp8_layers  # and it reaches it
    copied = [text for name, text in shown if name == "copying"]
    assert all(re.search(r"[kMG]?B/s|B/s|\dB", t) or "?" in t for t in copied)  # it counts bytes


def test_no_progress_by_default_off_a_terminal(tmp_path: Path) -> None:
    src, out = tmp_path / "flux.safetensors", tmp_path / "out.safetensors"
    _, state, _ = ft.tiny("flux")
    ft.write(state, src, "model.diffusion_model.")
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", str(src), str(out), *FORWARD],
                       capture_output=True, text=True, env=dict(subprocess_env(), TQDM_MININTERVAL="0"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _phases(r.stderr) == [] and "\r" not in r.stderr


def test_progress_has_one_owner() -> None:
    """Whether bars show is the run's option (RewriteOptions, --progress); the method learns it from
    the run (ModelView.progress), not from a copy in the settings that change a scale's value."""
    from dataclasses import fields

    from fp8stream.methods.interface import ModelView
    from fp8stream.methods.settings import CalibrationSettings
    from fp8stream.rewrite import RewriteOptions

    holders = [cls.__name__ for cls in (RewriteOptions, CalibrationSettings, ModelView)
               if "progress" in {f.name for f in fields(cls)}]
    assert holders == ["RewriteOptions", "ModelView"]
