"""scripts/check_accuracy.py's helpers on tiny synthetic cases: the bars its tables print, its rank
correlation, and the files it writes (a planted scale, weight-only flags) as ComfyUI reads them.
The harness runs themselves are too slow for CI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import check_accuracy as CA  # noqa: E402
from fp8stream.harness.checkpoint import write_fp8_checkpoint  # noqa: E402


def test_rank_agreement_is_spearman_over_the_common_layers():
    assert CA.rank_agreement({"a": 1, "b": 2, "c": 3, "x": 9}, {"a": 10, "b": 200, "c": 3000}) == pytest.approx(1.0)
    assert CA.rank_agreement({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == pytest.approx(-1.0)
    assert CA.rank_agreement({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1, "b": 3, "c": 2, "d": 4}) == pytest.approx(0.8)
    assert CA.rank_agreement({"a": 1, "b": 2, "c": 3}, {"a": 0, "b": 0, "c": 0}) is None  # nothing to rank
    assert CA.rank_agreement({"a": 1, "b": 2}, {"a": 1, "b": 2}) is None


def _result(predicted: dict[str, float], measured: dict[str, list[float]]) -> dict:
    return {"check": {f: {"comfy": db, "dynamic": 30.0} for f, db in predicted.items()},
            "end_to_end": {s: {"full": v, "fp8_weights": v, "one_call": v} for s, v in measured.items()}}


def test_prediction_bars_judge_the_mean_over_seeds_and_the_gap_to_dynamic():
    r = _result({"one": 29.0, "default": 33.0, "weight_only": math.inf},
                {"dynamic": [30.0, 30.0], "one": [28.0, 29.0], "default": [30.0, 31.0], "weight_only": [34.0, 34.0]})
    rows = {w["file"]: w for w in CA.prediction_rows("m", r)}
    one, default, weight_only = rows["one"], rows["default"], rows["weight_only"]
    assert one["measured"] == 28.5 and one["sqnr_error"] == 0.5 and one["gap_error"] == 0.5
    assert one["gap_bar"] and one["sqnr_bar"]
    assert default["sqnr_error"] == 2.5 and not default["sqnr_bar"] and not default["gap_bar"]
    assert not weight_only["sqnr_bar"] and not weight_only["gap_bar"]  # "exact" predicted: no finite error
    lines = CA.prediction_lines({"m": r}, "2 seeds")
    assert "| m | one | 29.00 | 28.50 | +0.50 | -1.00 | -1.50 | +0.50 | PASS | PASS | 28.50 | 28.50 |" in lines
    assert "| m | default | 33.00 | 30.50 | +2.50 | +3.00 | +0.50 | +2.50 | FAIL | FAIL | 30.50 | 30.50 |" in lines
    assert "| m | weight_only | exact | 34.00 | exact | exact | +4.00 | exact | FAIL | FAIL | 34.00 | 34.00 |" in lines


def test_the_files_it_writes_run_in_comfyui_as_intended(tmp_path):
    state = {f"{n}.{p}": torch.randn(8, 8) if p == "weight" else torch.randn(8)
             for n in "ab" for p in ("weight", "bias")}
    scaled = write_fp8_checkpoint(state, ["a", "b"], tmp_path / "scaled.safetensors", {"a": 0.5, "b": 0.25})
    unscaled = write_fp8_checkpoint(state, ["a", "b"], tmp_path / "unscaled.safetensors")
    assert CA.comfy_scales(unscaled) == {"a": 1.0, "b": 1.0}  # no input_scale: ComfyUI runs 1.0
    planted = CA.marked_copy(scaled, tmp_path / "planted.safetensors", {}, {"a": 0.01})
    assert CA.comfy_scales(planted) == {"a": pytest.approx(0.005), "b": 0.25}
    flagged = CA.marked_copy(scaled, tmp_path / "flagged.safetensors", {"b": True})
    assert CA.comfy_scales(flagged) == {"a": 0.5, "b": None}
    cleared = CA.marked_copy(flagged, tmp_path / "cleared.safetensors", {"b": False})
    assert CA.comfy_scales(cleared) == {"a": 0.5, "b": 0.25}  # the scale stayed beside the flag
    assert CA.planted_layer({"x.attn.q": 1.0, "y.attn.q": 1.0, "z.attn.q": None, "mlp": 1.0}) == "y.attn.q"
