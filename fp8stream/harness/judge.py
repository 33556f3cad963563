"""Judging scale sources on a model's real inputs: per layer (output SQNR against full
precision, clipped fraction, scale / real-amax scale) and per source (the issue-12 bars), and
the Markdown tables of the README's quality section.

A source gives each FP8 layer a scale, "dynamic" (amax/448 of each call) or None: kept
weight-only (full-precision input). A weight-only layer counts as full precision for the
"within 0.5 dB of dynamic" share, for at most a quarter of a model's layers; beyond that it
counts as a miss.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from fp8stream.harness.checkpoint import FP8Layer
from fp8stream.harness.fp8 import Scale, fp8_linear_quality
from fp8stream.harness.record import LinearInputs

WITHIN_DB = 0.5
CLIP_BAR = 1e-3


def per_layer(rec: LinearInputs, layers: Mapping[str, FP8Layer], bias: Callable[[str], torch.Tensor | None],
              sources: Mapping[str, Mapping[str, Scale | None]]) -> dict[str, dict]:
    """layer -> source -> {clipped, sqnr_db, scale_ratio} (or {"weight_only": True}), plus amax."""
    rows = {}
    for n, L in layers.items():
        calls = rec.calls(n)
        row: dict = {}
        for s, scales in sources.items():
            sc = scales.get(n)
            row[s] = ({"weight_only": True} if sc is None
                      else fp8_linear_quality(calls, L.weight, L.weight_scale, sc, bias(n)))
        row["amax"] = rec.amax(n)
        rows[n] = row
    return rows


def gaps_to_dynamic(rows: Mapping[str, dict], s: str) -> dict[str, float]:
    """Each layer the source scales: its output SQNR minus dynamic's (dB)."""
    return {n: r[s]["sqnr_db"] - r["dynamic"]["sqnr_db"] for n, r in rows.items() if not r[s].get("weight_only")}


def pct_within(rows: Mapping[str, dict], s: str, slack_db: float = 0.0) -> float:
    """% of layers within WITHIN_DB (+ ``slack_db``) of dynamic, weight-only layers counting as
    within for at most a quarter of the layers (see the module docstring)."""
    d = gaps_to_dynamic(rows, s)
    n_all = len(rows)
    within = sum(x >= -WITHIN_DB - slack_db for x in d.values()) + min(n_all - len(d), n_all // 4)
    return 100.0 * within / n_all


def summarize_source(rows: Mapping[str, dict], s: str, e2e: float | None) -> dict:
    """One source's figures over a model's layers (see the module docstring for weight-only)."""
    scaled = {n: r for n, r in rows.items() if not r[s].get("weight_only")}
    n_all, n_wo = len(rows), len(rows) - len(scaled)
    d = gaps_to_dynamic(rows, s)
    worst = min(d, key=d.get) if d else None
    ratios = [r[s]["scale_ratio"] for r in scaled.values()]
    return {
        "pct_within_0.5dB_of_dynamic": pct_within(rows, s),
        "worst_layer": worst,
        "worst_vs_dynamic_db": d[worst] if worst else 0.0,
        "worst_layer_sqnr_db": scaled[worst][s]["sqnr_db"] if worst else None,
        "max_clip": max((r[s]["clipped"] for r in scaled.values()), default=0.0),
        "layers_clip_over_0.1pct": sum(r[s]["clipped"] > CLIP_BAR for r in scaled.values()),
        "weight_only_layers": n_wo,
        "layers": n_all,
        "scale_ratio_min": min(ratios, default=None), "scale_ratio_max": max(ratios, default=None),
        "end_to_end": e2e,
    }


def summarize(rows: Mapping[str, dict], e2e: Mapping[str, float]) -> dict[str, dict]:
    """source -> its figures, in the order of ``e2e`` (sources without layers: end to end only)."""
    sources = [s for s in e2e if s in next(iter(rows.values()))]
    return {s: summarize_source(rows, s, e2e[s]) if s in sources else {"end_to_end": e2e[s]} for s in e2e}


def bars(summary: Mapping[str, dict], source: str, encoder: bool) -> dict[str, bool]:
    """Issue 12's bars for one source: >= 90% within 0.5 dB of dynamic, no layer clipping more
    than 0.1%, end to end within 1 dB of dynamic (DiT) or at least 1.0's (encoder)."""
    v, dyn = summary[source], summary["dynamic"]
    if encoder:
        e2e_ok = v["end_to_end"] >= summary["one"]["end_to_end"]
    else:
        e2e_ok = v["end_to_end"] >= dyn["end_to_end"] - 1.0
    return {"within": v["pct_within_0.5dB_of_dynamic"] >= 90.0, "clip": v["layers_clip_over_0.1pct"] == 0,
            "end_to_end": e2e_ok, "weight_only": v["weight_only_layers"] <= v["layers"] / 4}


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return "-"
    return "inf" if isinstance(x, float) and math.isinf(x) else format(x, spec)


def markdown(title: str, summary: Mapping[str, dict], e2e_label: str, notes: Mapping[str, str] = {}) -> str:
    """One model's table: a row per source."""
    lines = [f"{title}", "",
             "| source | within 0.5 dB | worst layer vs dynamic | max clip | layers clip > 0.1% | weight-only "
             f"| {e2e_label} |",
             "|---|---|---|---|---|---|---|"]
    for s, v in summary.items():
        if "max_clip" not in v:
            e2e = _fmt(v.get("end_to_end"), ".4f" if e2e_label == "cosine" else ".2f")
            lines.append(f"| {s} | | | | | | {e2e} |" if s not in notes else f"| {s} | {notes[s]} | | | | | |")
            continue
        worst = f"{_fmt(v['worst_vs_dynamic_db'], '+.2f')} ({v['worst_layer']})" if v["worst_layer"] else "-"
        e2e = _fmt(v["end_to_end"], ".4f" if e2e_label == "cosine" else ".2f")
        lines.append(f"| {s} | {v['pct_within_0.5dB_of_dynamic']:.0f}% | {worst} | {_fmt(v['max_clip'], '.2g')} | "
                     f"{v['layers_clip_over_0.1pct']} | {v['weight_only_layers']} | {e2e} |")
    for s, why in notes.items():
        if s not in summary:
            lines.append(f"| {s} | {why} | | | | | |")
    return "\n".join(lines) + "\n"
