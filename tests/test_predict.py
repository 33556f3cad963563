"""calibrate's prediction (issue 25): the pass it runs anyway also runs the file it writes as
ComfyUI will, and says what `fp8stream check OUT` says of it: the same figures, the same verdict,
the same bytes written with or without it; no figure where a scale was not final when the
streams ran a layer (a hard bound's cap known only after the pass, a Linear called twice), and
nothing said where no forward pass runs.

Tolerance of calibrate's figures against check's: 0.001 dB, one unit of the last digit --json
prints. Both run the same arithmetic (the same streams, weights, inputs, seed and thread count)
on the same machine, so the figures are expected to be equal; the tolerance only admits a
last-bit difference that lands on the other side of --json's rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest

import forward_tiny as ft  # noqa: E402
from conftest import run_cli, subprocess_env  # noqa: E402
from fp8stream.methods.forward.prediction_plan import NOT_ASKED  # noqa: E402

PASS = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
        "--no-progress"]
LOUD = ("img_mlp.0.", "txt_mlp.0.", "linear1.")  # test_check's tiny Flux: MLP inputs in the thousands
JSON_DB = 0.001  # one unit of --json's last digit (module docstring)
PREDICT = ["--predict"]
MICRO_BATCHES = {"one micro-batch": [], "three micro-batches": ["--forward-micro-batch", "1"]}


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    _, state, _ = ft.tiny("flux")
    state = {k: v * 300 if any(p in k for p in LOUD) else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("predict") / "in.safetensors"
    ft.write(state, path)
    return path


def _calibrate(src: Path, out: Path, *extra: str) -> dict:
    asked = [] if "--no-predict" in extra else PREDICT  # off by default
    r = run_cli("calibrate", src, out, *PASS, "--json", "-f", *asked, *extra)
    assert r.exit_code == 0, r.output[-2000:]
    return json.loads(r.stdout)


def _check(path: Path, *extra: str) -> dict:
    r = run_cli("check", path, *PASS, "--json", *extra)
    assert r.exit_code == 0, r.output[-2000:]
    return json.loads(r.stdout)


def _said(text: str) -> list[str]:
    """The report's lines about a prediction."""
    return [line for line in text.splitlines() if line.startswith(("prediction", "note: no prediction"))]


def _same_figures(predicted: dict, checked: dict) -> None:
    assert predicted["verdict"] == checked["verdict"] and predicted["counts"] == checked["counts"]
    for stream in ("comfy", "dynamic"):
        a, b = predicted["end_to_end"][stream], checked["end_to_end"][stream]
        assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], abs=JSON_DB)
        assert [s["t"] for s in a["per_sample"]] == [s["t"] for s in b["per_sample"]]
        assert [s["sqnr_db"] for s in a["per_sample"]] == pytest.approx([s["sqnr_db"] for s in b["per_sample"]],
                                                                      abs=JSON_DB)
    for a, b in zip(predicted["layers"], checked["layers"], strict=True):
        assert (a["name"], a["runs_fp8"], a["scale"], a["why"]) == (b["name"], b["runs_fp8"], b["scale"], b["why"])
        for key in ("static_sqnr_db", "dynamic_sqnr_db", "clipped"):
            assert a[key] == pytest.approx(b[key], abs=JSON_DB), (a["name"], key)


@pytest.mark.parametrize("micro", sorted(MICRO_BATCHES))
def test_the_prediction_is_what_check_says_of_the_output(flux, tmp_path, micro):
    """Every micro-batch of the full-precision stream runs a layer before the file's stream does,
    whose scale is then final: the figures are check's on OUT, with one micro-batch or three."""
    extra = MICRO_BATCHES[micro]
    doc = _calibrate(flux, tmp_path / "out.safetensors", *extra)
    predicted, checked = doc["prediction"], _check(tmp_path / "out.safetensors", *extra)
    assert doc["prediction_reason"] is None and predicted["input"] == str(tmp_path / "out.safetensors")
    _same_figures(predicted, checked)
    assert predicted["end_to_end"]["comfy"]["sqnr_db"] > 20.0  # measured 29.0: a real figure, not a NaN or 0
    text = run_cli("calibrate", flux, tmp_path / "out.safetensors", *PASS, "-f", *PREDICT,
                   *extra).stderr.splitlines()
    assert _said("\n".join(text)) == [f"prediction in ComfyUI: {checked['verdict']}"]


def test_the_bytes_are_the_same_with_and_without_the_prediction(flux, tmp_path):
    """The streams only observe: the pass's ranges are the full-precision stream's alone."""
    for micro in MICRO_BATCHES.values():
        on, off = tmp_path / "on.safetensors", tmp_path / "off.safetensors"
        with_it, without = _calibrate(flux, on, *micro), _calibrate(flux, off, "--no-predict", *micro)
        assert on.read_bytes() == off.read_bytes()
        assert with_it["prediction"] is not None
        assert without["prediction"] is None and without["prediction_reason"] == NOT_ASKED
    for asked in ([], ["--no-predict"]):  # off by default: it costs about 3x the pass on the CPU
        text = run_cli("calibrate", flux, off, *PASS, "-f", *asked).stderr
        assert not _said(text)


def test_verbose_gives_every_layers_figures(flux, tmp_path):
    r = run_cli("calibrate", flux, tmp_path / "out.safetensors", *PASS, *PREDICT, "--verbose")
    lines = r.stderr.splitlines()
    at = lines.index("every FP8 layer:")
    checked = _check(tmp_path / "out.safetensors")
    assert lines[at - 1].startswith("end to end, dB as ComfyUI runs the file / dynamic FP8: t=0.00 ")
    assert [line.split()[0] for line in lines[at + 2:at + 2 + len(checked["layers"])]] == \
        [layer["name"] for layer in checked["layers"]]


def test_a_scale_the_bound_settles_after_the_pass_gives_no_figure_and_says_why(flux, tmp_path):
    """A margin far above every hard bound: a bound that is a proof caps the scale. Where it
    needs the stream's data (a producer's rows: time_in.out_layer reads time_in.in_layer's), a
    copy at fixed places knows it only after the pass: no figure, the reason said. A copy that
    streams (stdout) runs the pass after it, the bounds known: check's figures again."""
    margin = ["--forward-margin", "1000", *PREDICT]
    doc = _calibrate(flux, tmp_path / "out.safetensors", *margin)
    assert doc["prediction"] is None and "capped by the hard bound" in doc["prediction_reason"]
    assert f"no prediction: {doc['prediction_reason']}" in doc["notes"]
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", str(flux), "-", *PASS, "--json", *margin],
                       capture_output=True, env=subprocess_env())
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "streamed.safetensors").write_bytes(r.stdout)
    streamed = json.loads(r.stderr)
    _same_figures(streamed["prediction"], _check(tmp_path / "streamed.safetensors"))
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "out.safetensors").read_bytes()


def test_a_linear_called_twice_with_a_larger_input_gives_no_figure(flux, tmp_path, monkeypatch):
    """The text embedder runs again after the model, on 3x its input: its scale, settled by the
    second call, was not final when the streams first ran it."""
    from diffusers import FluxTransformer2DModel

    forward = FluxTransformer2DModel.forward

    def twice(self, hidden_states, encoder_hidden_states=None, **kwargs):
        out = forward(self, hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)
        self.context_embedder(encoder_hidden_states * 3)
        return out

    monkeypatch.setenv("FP8STREAM_NO_CACHE", "1")
    monkeypatch.setattr(FluxTransformer2DModel, "forward", twice)
    doc = _calibrate(flux, tmp_path / "out.safetensors")
    assert doc["prediction"] is None
    assert doc["prediction_reason"].startswith("txt_in: ") and "more than once" in doc["prediction_reason"]


@pytest.mark.parametrize("how", [["--method", "simulate"], ["--dry-run"]])
def test_a_run_without_a_forward_pass_says_nothing_of_a_prediction(flux, tmp_path, how):
    out = [] if how == ["--dry-run"] else [tmp_path / "out.safetensors"]
    r = run_cli("calibrate", flux, *out, *PASS, *PREDICT, "--json", *how)
    assert r.exit_code == 0, r.output[-2000:]
    doc = json.loads(r.stdout)
    assert doc["prediction"] is None and doc["prediction_reason"]
    assert not any("prediction" in note for note in doc["notes"])
    assert not _said(run_cli("calibrate", flux, *out, *PASS, *PREDICT, "-f", *how).stderr)


def test_a_pass_that_ran_before_the_header_gives_no_figure_and_says_why_once(tmp_path):
    """A family whose model code cannot run on meta tensors runs its pass before the header (it
    decides the layout), so not on the file as written: no figure, the reason in one note."""
    doc = _calibrate(ft.comfy_file("hunyuan-video-1.5", tmp_path), tmp_path / "out.safetensors")
    assert doc["prediction"] is None and "ran before the header" in doc["prediction_reason"]
    assert [n for n in doc["notes"] if n.startswith("no prediction")] == [f"no prediction: {doc['prediction_reason']}"]
