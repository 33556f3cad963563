"""The quality harness (issue 4): fp8stream's scales against real activations, side by side.

For MiniLM and the tiny Flux DiT (as trained, and rescaled by k so its modulated inputs reach
the thousands): write the model's linears as a ComfyUI FP8 checkpoint, run `fp8stream
calibrate` with each scale source, record the true input of every FP8 linear over the judged
run, quantize it with comfy-kitchen's static FP8 quantization, run the FP8 linear, and report
per layer the clipped fraction, output SQNR (dB) against full precision and the scale's ratio
to the real-data amax scale; end to end the MiniLM sentence-embedding cosine or the DiT's
sample SQNR against full precision.

Sources: dynamic (per-call amax/448, the ceiling), real_max (static amax of the judged run),
stats_* (`fp8stream.record` on the judged run -> stats file -> `calibrate --method stats`, each
rule; the DiT's recording uses diffusers names, matched by the built-in Flux renaming table),
sim_* (`--method simulate`: each mode and rule), one (1.0), weight_scale, heuristic
(`--method heuristic`, weight_scale x 0.5).

Usage: HF_HUB_OFFLINE=1 python scripts/quality.py [--k 1 100 1000] [--json out.json] [--fast]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import quality_models as qm  # noqa: E402

import fp8stream  # noqa: E402
from fp8stream.calibration.methods import CalibrationSettings  # noqa: E402
from fp8stream.rewrite import RewriteOptions, calibrate_file  # noqa: E402

# name -> CalibrationSettings keyword arguments (None: not an fp8stream method)
FP8STREAM_SOURCES: dict[str, dict] = {
    "sim_bound": dict(method="simulate", sim_mode="bound"),
    "sim_bound_pct": dict(method="simulate", sim_mode="bound", rule="percentile"),
    "sim_bound_mse": dict(method="simulate", sim_mode="bound", rule="mse"),
    "sim_hybrid4": dict(method="simulate", sim_mode="hybrid", margin=4.0),
    "sim_hybrid1": dict(method="simulate", sim_mode="hybrid", margin=1.0),
    "sim_note": dict(method="simulate", sim_mode="note"),
    "stats_max": dict(method="stats"),
    "stats_pct": dict(method="stats", rule="percentile"),
    "stats_mse": dict(method="stats", rule="mse"),
    "heuristic": dict(method="heuristic"),
}
DEFAULT_SOURCE = "sim_bound"


def fp8stream_scales(ckpt: Path, out: Path, stats: Path | None, **kw) -> dict[str, float]:
    if kw.get("method") == "stats":
        kw = dict(kw, stats=str(stats))
    report = calibrate_file(RewriteOptions(str(ckpt), str(out), CalibrationSettings(**kw), force=True))
    return {layer.name: layer.scale for layer in report.layers}


def all_sources(ckpt: Path, tmp: Path, stats: Path, layers: Mapping[str, qm.FP8Layer],
                rec: qm.LinearInputs, only: list[str] | None = None) -> dict[str, Callable[[str], object]]:
    src: dict[str, Callable[[str], object]] = {
        "dynamic": lambda n: "dynamic",
        "real_max": lambda n: rec.amax(n) / qm.FP8_MAX,
        "one": lambda n: 1.0,
        "weight_scale": lambda n: float(layers[n].weight_scale),
    }
    for name, kw in FP8STREAM_SOURCES.items():
        if only is not None and name not in only:
            continue
        scales = fp8stream_scales(ckpt, tmp / "out.safetensors", stats, **kw)
        src[name] = lambda n, _s=scales: _s[n]
    return src


def per_layer(rec: qm.LinearInputs, layers: Mapping[str, qm.FP8Layer], bias, sources) -> dict[str, dict]:
    rows = {}
    for n, L in layers.items():
        calls = rec.calls(n)
        row = {s: qm.fp8_linear_quality(calls, L.weight, L.weight_scale, fn(n), bias(n)) for s, fn in sources.items()}
        row["amax"] = rec.amax(n)
        rows[n] = row
    return rows


def summarize(rows: Mapping[str, dict], e2e: Mapping[str, float]) -> dict[str, dict]:
    out = {}
    for s in e2e:
        if s not in next(iter(rows.values())):
            out[s] = {"end_to_end": e2e[s]}
            continue
        d = [r[s]["sqnr_db"] - r["dynamic"]["sqnr_db"] for r in rows.values()]
        floor = [r[s]["sqnr_db"] - max(r["one"]["sqnr_db"], r["weight_scale"]["sqnr_db"]) for r in rows.values()]
        vs_real = [r[s]["sqnr_db"] - r["real_max"]["sqnr_db"] for r in rows.values()]
        ratios = [r[s]["scale_ratio"] for r in rows.values()]
        out[s] = {
            "pct_within_0.5dB_of_dynamic": 100.0 * sum(x >= -0.5 for x in d) / len(d),
            "worst_vs_dynamic_db": min(d),
            "worst_vs_real_max_db": min(vs_real),
            "worst_vs_floor_db": min(floor),  # vs the better of 1.0 and weight_scale, per layer
            "max_clip": max(r[s]["clipped"] for r in rows.values()),
            "layers_clip_over_0.1pct": sum(r[s]["clipped"] > 1e-3 for r in rows.values()),
            "scale_ratio_min": min(ratios), "scale_ratio_max": max(ratios),
            "min_sqnr_db": min(r[s]["sqnr_db"] for r in rows.values()),
            "end_to_end": e2e[s],
        }
    return out


def print_table(title: str, summary: Mapping[str, dict], e2e_label: str) -> None:
    print(f"\n== {title}")
    print(f"  {'source':14s} {'within0.5dB':>11s} {'worst-dyn':>9s} {'worst-real':>10s} {'vs 1/ws':>8s} "
          f"{'maxclip':>8s} {'clip>0.1%':>9s} {'ratio min..max':>17s} {e2e_label:>9s}")
    for s, v in summary.items():
        if "max_clip" not in v:
            print(f"  {s:14s} {'':>11s} {'':>9s} {'':>10s} {'':>8s} {'':>8s} {'':>9s} {'':>17s} {v['end_to_end']:9.4f}")
            continue
        print(f"  {s:14s} {v['pct_within_0.5dB_of_dynamic']:10.0f}% {v['worst_vs_dynamic_db']:+9.2f} "
              f"{v['worst_vs_real_max_db']:+10.2f} {v['worst_vs_floor_db']:+8.2f} {v['max_clip']:8.4f} "
              f"{v['layers_clip_over_0.1pct']:9d} {v['scale_ratio_min']:8.3g}..{v['scale_ratio_max']:<8.3g} "
              f"{v['end_to_end']:9.4f}")


def run_minilm(tmp: Path, sentences: list[str], only: list[str] | None = None, quiet: bool = False) -> dict:
    model, tok = qm.load_minilm()
    ckpt = tmp / "minilm_fp8.safetensors"
    qm.write_minilm_fp8(model, ckpt)
    layers = qm.read_fp8_layers(ckpt)
    run = lambda: qm.embed(model, tok, sentences)  # noqa: E731
    rec = qm.record_linear_inputs(model, run)
    stats = tmp / "minilm_stats.json"
    with fp8stream.record(model, str(stats)):
        run()
    mods = dict(model.named_modules())
    src = all_sources(ckpt, tmp, stats, layers, rec, only)
    rows = per_layer(rec, layers, lambda n: mods[n].bias, src)
    e2e = {s: qm.minilm_end_to_end(model, tok, layers, {n: fn(n) for n in layers}, sentences) for s, fn in src.items()}
    e2e["weight_only"] = qm.minilm_end_to_end(model, tok, layers, {n: None for n in layers}, sentences)
    summary = summarize(rows, e2e)
    quiet or print_table(f"MiniLM, {len(layers)} FP8 linears, {len(sentences)} sentences (end to end: cosine)", summary, "cosine")
    return {"layers": rows, "summary": summary}


def run_flux(tmp: Path, k: float, n: int, steps: int, only: list[str] | None = None, quiet: bool = False) -> dict:
    tf = qm.load_tiny_flux()
    if k != 1:
        tf = qm.rescaled_copy(tf, k)
    ckpt = tmp / f"flux_k{k:g}.safetensors"
    qm.write_tiny_flux_fp8(tf, ckpt)
    layers = qm.read_fp8_layers(ckpt)
    run = lambda: qm.sample(tf, n, steps, seed=0)  # noqa: E731
    rec = qm.flux_inputs_by_comfy_name(qm.record_linear_inputs(tf.model, run), tf.config)
    stats = tmp / f"flux_k{k:g}_stats.json"
    with fp8stream.record(tf.model, str(stats)):  # diffusers names: matched by the Flux renaming table
        run()
    sd = qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)
    src = all_sources(ckpt, tmp, stats, layers, rec, only)
    rows = per_layer(rec, layers, lambda name: sd[name + ".bias"], src)
    e2e = {s: qm.flux_end_to_end(tf, layers, {m: fn(m) for m in layers}, n, steps, 0) for s, fn in src.items()}
    e2e["weight_only"] = qm.flux_end_to_end(tf, layers, {m: None for m in layers}, n, steps, 0)
    summary = summarize(rows, e2e)
    amax = [r["amax"] for r in rows.values()]
    quiet or print_table(f"tiny Flux DiT k={k:g}, {len(layers)} FP8 linears, {n} samples x {steps} steps, input amax "
                f"{min(amax):.3g}..{max(amax):.3g} (end to end: sample SQNR dB)", summary, "SQNR dB")
    return {"k": k, "layers": rows, "summary": summary}


def overestimate_curve(seed: int = 0) -> dict[str, float]:
    """SQNR of a Gaussian input's FP8 round trip vs the scale's ratio to amax/448 (docs/scales.md)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 256, generator=g)
    amax = float(x.abs().max())
    out = {}
    for r in (0.25, 0.5, 1, 2, 4, 10, 50, 100, 1000, 10000):
        s = amax / qm.FP8_MAX * r
        q = (x * (1 / s)).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
        out[f"{r:g}"] = qm.sqnr_db(x, q)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=float, nargs="*", default=[1.0, 100.0, 1000.0], help="DiT rescaling factors")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sentences", type=int, default=len(qm.EVALUATION_SENTENCES))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-minilm", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.monotonic()
    out: dict = {"overestimate_sqnr_db": overestimate_curve()}
    print("Gaussian input, FP8 round-trip SQNR (dB) vs scale / (amax/448):")
    print("  " + "  ".join(f"{r}x {v:.1f}" for r, v in out["overestimate_sqnr_db"].items()))
    with tempfile.TemporaryDirectory() as d:
        if not args.no_minilm:
            out["minilm"] = run_minilm(Path(d), qm.EVALUATION_SENTENCES[: args.sentences])
        for k in args.k:
            out[f"flux_k{k:g}"] = run_flux(Path(d), k, args.samples, args.steps)
    print(f"\n({time.monotonic() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=lambda v: None if isinstance(v, float) and math.isinf(v) else v))
    return out


if __name__ == "__main__":
    main()
