"""The calibration interface as a new method (issue 12's forward pass) will use it: registered by
name, deciding weight-only layers before the header, reading tensors by name after the stream."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import pytest
from safetensors import safe_open

from conftest import small_model_tensors
from fp8stream.errors import UsageError
from fp8stream.io.source import TensorSource
from fp8stream.methods import registry
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.scales.estimate import ScaleEstimate
from fp8stream.synthetic.checkpoint import write_checkpoint
from test_shard_equivalence import write_shards

SKIPPED = "blocks.0.mlp.2"
SEEN: dict[str, object] = {}


class ByNameMethod:
    """Keeps one layer weight-only; scales every other from its weight's bytes read by name."""

    def needs_random_access(self, model: ModelView) -> bool:
        SEEN.setdefault("asked_of", []).append(model.source)
        return True

    def prepare(self, model: ModelView) -> MethodPlan:
        SEEN["layers"] = [layer.name for layer in model.layers]
        SEEN["prepared"] = SEEN.get("prepared", 0) + 1
        return MethodPlan(weight_only={SKIPPED: "not reached by the test's model code"}, rows=False)

    def observe_weight(self, layer, rows, row_start: int) -> None:
        raise AssertionError("rows=False: no weight rows")

    def weight_done(self, layer) -> None:
        raise AssertionError("rows=False")

    def observe_tensor(self, info, chunk) -> None:
        raise AssertionError("no watches")

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        SEEN["asked"] = sorted(weight_scales)
        out = {}
        for name in weight_scales:
            raw = model.source.get(name + ".weight")
            out[name] = ScaleEstimate(len(raw) / 1e6, f"{len(raw)} bytes read by name")
        return out

    def close(self) -> None:
        SEEN["closed"] = SEEN.get("closed", 0) + 1


def create(settings: CalibrationSettings) -> CalibrationMethod:
    SEEN["created"] = SEEN.get("created", 0) + 1
    return ByNameMethod()


@pytest.fixture
def by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.METHODS, "by-name", registry.MethodEntry(__name__, "test method"))
    SEEN.clear()


def test_a_registered_method_decides_weight_only_layers_and_reads_by_name(tmp_path: Path, by_name: None) -> None:
    src, out = tmp_path / "m.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    report = calibrate_file(RewriteOptions(str(src), str(out), settings=CalibrationSettings(method="by-name")))
    assert SEEN["layers"] == ["blocks.0.attn.qkv", "blocks.0.mlp.0", "blocks.0.mlp.2"]
    assert SEEN["asked"] == ["blocks.0.attn.qkv", "blocks.0.mlp.0"]
    assert SEEN["closed"] == 1  # the run closes its method once it is over
    assert [e.name for e in report.excluded] == [SKIPPED] and "not reached" in report.excluded[0].reason
    assert report.bytes_out == out.stat().st_size  # planned again with the method's weight-only layer
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("blocks.0.attn.qkv.input_scale").item() == pytest.approx(96 * 32 / 1e6)
        assert f"{SKIPPED}.input_scale" not in f.keys()
        marker = json.loads(bytes(f.get_tensor(f"{SKIPPED}.comfy_quant").tolist()))
        assert marker.get("full_precision_matrix_mult") is True  # kept weight-only, as planned


def test_a_random_access_method_gets_a_pipe_spooled_or_refuses_it(tmp_path: Path, by_name: None, monkeypatch) -> None:
    """A method that reads tensors by name gets a pipe spooled to a temporary file (the file's
    bytes come out); with spool=False (--no-spool) the run refuses the pipe."""
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    import io
    import sys

    data = src.read_bytes()
    for spool in (False, True):
        monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(data)})())
        options = RewriteOptions("-", str(tmp_path / "o.safetensors"),
                                 settings=CalibrationSettings(method="by-name", spool=spool))
        if not spool:
            with pytest.raises(UsageError, match="reads tensors by name"):
                calibrate_file(options)
            continue
        calibrate_file(options)
    calibrate_file(RewriteOptions(str(src), str(tmp_path / "f.safetensors"),
                                  settings=CalibrationSettings(method="by-name")))
    assert (tmp_path / "o.safetensors").read_bytes() == (tmp_path / "f.safetensors").read_bytes()
    assert [n for n in os.listdir(tmp_path) if ".spool." in n] == []


def test_a_spooled_pipe_gets_one_method_prepared_once_with_by_name_reads(tmp_path: Path, by_name: None,
                                                                        monkeypatch) -> None:
    """The method that says, from the header, that it reads tensors by name is the one the run
    prepares, once, with the spool's by-name reads, and closes once: what it worked out to answer
    (the forward pass's model: seconds on a real checkpoint) is not built again after the spool."""
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(src.read_bytes())})())
    report = calibrate_file(RewriteOptions("-", str(tmp_path / "o.safetensors"),
                                           settings=CalibrationSettings(method="by-name")))
    assert any("spooled" in note for note in report.notes)
    assert SEEN["asked_of"] == [None]  # asked of the stream once, before the spool
    assert (SEEN["created"], SEEN["prepared"], SEEN["closed"]) == (1, 1, 1)
    assert SEEN["asked"] == ["blocks.0.attn.qkv", "blocks.0.mlp.0"]  # scales() read the spool by name


def test_tensor_source_hides_which_shard_holds_a_tensor(tmp_path: Path) -> None:
    single = tmp_path / "m.safetensors"
    write_checkpoint(str(single), small_model_tensors())
    write_shards(single, tmp_path / "shards", 3, seed=1)
    from fp8stream.io.storage import locate
    from fp8stream.pipeline.inputs import open_model

    with open_model(locate(str(tmp_path / "shards"))) as model, model.tensor_source() as sharded, \
            open_model(locate(str(single))) as one, one.tensor_source() as whole:
        assert isinstance(sharded, TensorSource)
        assert len({sharded.path_of(n) for n in sharded.names()}) == 3
        for name in whole.names():
            assert sharded.get(name) == whole.get(name)
            assert sharded.info(name).shape == whole.info(name).shape
        w = "blocks.0.mlp.0.weight"
        assert sharded.read_rows(w, 5, 9) == whole.get(w)[5 * 32 : 9 * 32]
        with pytest.raises(IndexError):
            sharded.read_rows(w, 0, 129)
