"""The bound's model of the conditioning vector, SiLU(vec), is made on a thread as soon as the
embedders it reads have streamed past (they sit early in a file), not at the tail: the same
scales as made at the tail, on the stream and at fixed places alike."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import run_cli
from fp8stream.methods.simulate import simulate_method
from fp8stream.methods.simulate.activation_model import ActivationModel
from fp8stream.methods.simulate.simulate_method import WeightAwareMethod
from fp8stream.methods.simulate.vec_model import VecAhead

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


FORWARD = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
           "--device", "cpu", "--no-progress", "--json"]
RUNS = {  # how the rows reach the bound: the copy's loop at fixed places, the stream (--verify keeps it),
    # the default's pass (the copy's reading threads show its reads, in any order)
    "placed": SIMULATE, "stream": SIMULATE + ["--verify"], "default": FORWARD}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_vec_model_made_ahead_gives_the_scales_made_at_the_tail(flux, tmp_path, monkeypatch, run):
    with monkeypatch.context() as m:
        m.setattr(simulate_method, "_vec_inputs", lambda *args: None)
        tail = run_cli("calibrate", flux, tmp_path / "tail.safetensors", *RUNS[run])
    assert tail.exit_code == 0, tail.output[-2000:]
    made_on, started_before_the_tail = [], []
    make, scales = ActivationModel._make_vec, WeightAwareMethod.scales

    def making(self, width):
        made_on.append(threading.current_thread().name)
        return make(self, width)

    def noting(self, view, weight_scales):
        ahead = self.model.vec_ahead
        started_before_the_tail.append(ahead is not None and ahead._thread is not None)
        return scales(self, view, weight_scales)
    monkeypatch.setattr(ActivationModel, "_make_vec", making)
    monkeypatch.setattr(WeightAwareMethod, "scales", noting)
    ahead = run_cli("calibrate", flux, tmp_path / "ahead.safetensors", *RUNS[run])
    assert ahead.exit_code == 0, ahead.output[-2000:]
    assert started_before_the_tail == [True]
    assert made_on == ["fp8stream vec model"]  # once, ahead; the tail took its result
    if run != "default":  # the bound's own account of the modulations' input (the default's is the pass's)
        assert [x for x in json.loads(ahead.stdout)["layers"] if "SiLU(vec)" in json.dumps(x)]
    assert (tmp_path / "ahead.safetensors").read_bytes() == (tmp_path / "tail.safetensors").read_bytes()


def test_nothing_is_made_ahead_for_a_selection_that_does_not_read_it(flux, tmp_path, monkeypatch):
    made_on = []
    make = ActivationModel._make_vec
    monkeypatch.setattr(ActivationModel, "_make_vec", lambda self, w: made_on.append(w) or make(self, w))
    out = run_cli("calibrate", flux, tmp_path / "out.safetensors", *SIMULATE, "--include", "*img_in*")
    assert out.exit_code == 0, out.output[-2000:]
    assert made_on == []


def test_an_error_made_ahead_is_raised_where_the_model_is_asked_for():
    def broken():
        raise ValueError("embedder of 0 rows")
    ahead = VecAhead({"w": 4}, 8)
    assert ahead.arrived("w", 2) is False and ahead.arrived("other", 9) is False
    assert ahead.arrived("w", 2) is True
    ahead.start(broken)
    assert ahead.result(16) is None  # made for another width: the tail makes its own
    with pytest.raises(ValueError, match="embedder of 0 rows"):
        ahead.result(8)


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
