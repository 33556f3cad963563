"""The bound's model of the conditioning vector, SiLU(vec), is made on a thread as soon as the
embedders it reads have streamed past (they sit early in a file), not at the tail: the same
scales as made at the tail, on the stream and at fixed places alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import run_cli
from fp8stream.methods.simulate import simulate_method
from fp8stream.methods.simulate.simulate_method import WeightAwareMethod

SIMULATE = ["--method", "simulate", "--device", "cpu", "--no-progress", "--json"]


EMBEDDERS = ("model.diffusion_model.time_in.", "model.diffusion_model.guidance_in.",
             "model.diffusion_model.vector_in.")


@pytest.fixture(scope="module", params=["bf16-embedders", "fp8-embedders"])
def flux(request, tmp_path_factory) -> Path:
    """The tiny Flux as ComfyUI ships it: its time, guidance and pooled-text embedders in BF16
    (they stream past in chunks), or FP8 and calibrated (their rows go to the method as weights)."""
    path = tmp_path_factory.mktemp("in") / "flux.safetensors"
    _, state, _ = ft.tiny("flux")
    state = {"model.diffusion_model." + k: v for k, v in state.items()}
    fp8 = [n for n in ft.fp8_linears(state) if request.param == "fp8-embedders" or not n.startswith(EMBEDDERS)]
    ft.qm.write_fp8_checkpoint(state, fp8, path)
    return path


@pytest.mark.parametrize("where", ["placed", "stream"])
def test_the_vec_model_made_ahead_gives_the_scales_made_at_the_tail(flux, tmp_path, monkeypatch, where):
    extra = ["--verify"] if where == "stream" else []  # --verify keeps the stream
    at_tail = monkeypatch.context()
    with at_tail as m:
        m.setattr(simulate_method, "_vec_inputs", lambda *args: None)
        tail = run_cli("calibrate", flux, tmp_path / "tail.safetensors", *SIMULATE, *extra)
    assert tail.exit_code == 0, tail.output[-2000:]
    started_before_the_tail = []
    scales = WeightAwareMethod.scales

    def noting(self, view, weight_scales):
        ahead = self.model.vec_ahead
        started_before_the_tail.append(ahead is not None and ahead._thread is not None)
        return scales(self, view, weight_scales)
    monkeypatch.setattr(WeightAwareMethod, "scales", noting)
    ahead = run_cli("calibrate", flux, tmp_path / "ahead.safetensors", *SIMULATE, *extra)
    assert ahead.exit_code == 0, ahead.output[-2000:]
    assert started_before_the_tail == [True]
    vec_layers = [x for x in json.loads(ahead.stdout)["layers"] if "SiLU(vec)" in json.dumps(x)]
    assert vec_layers  # the modulations read it
    assert (tmp_path / "ahead.safetensors").read_bytes() == (tmp_path / "tail.safetensors").read_bytes()


def test_an_embedder_that_never_comes_leaves_the_model_to_the_tail(flux, tmp_path, monkeypatch):
    """Waiting for a tensor the stream does not show (here: one byte too many) starts nothing;
    the tail makes the model, as before."""
    with monkeypatch.context() as m:
        m.setattr(simulate_method, "_vec_inputs", lambda *args: None)
        assert run_cli("calibrate", flux, tmp_path / "tail.safetensors", *SIMULATE).exit_code == 0
    real = simulate_method._vec_inputs

    def one_byte_more(*args):
        sizes, width = real(*args)
        name = next(iter(sizes))
        return {**sizes, name: sizes[name] + 1}, width
    monkeypatch.setattr(simulate_method, "_vec_inputs", one_byte_more)
    started = []
    scales = WeightAwareMethod.scales
    monkeypatch.setattr(WeightAwareMethod, "scales", lambda self, v, w: started.append(
        self.model.vec_ahead._thread is not None) or scales(self, v, w))
    late = run_cli("calibrate", flux, tmp_path / "late.safetensors", *SIMULATE)
    assert late.exit_code == 0, late.output[-2000:]
    assert started == [False]
    assert (tmp_path / "late.safetensors").read_bytes() == (tmp_path / "tail.safetensors").read_bytes()
