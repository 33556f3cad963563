"""Reference figures for the quality harness: the scale sources that need no fp8stream.

For MiniLM and the tiny Flux DiT (as trained and rescaled by k), on real recorded inputs:
per-layer clip fraction and output SQNR, and the end-to-end figure, for
  dynamic      per-call amax/448 (the ceiling),
  real_max     static amax/448 recorded on *other* inputs (calibration sentences / another seed),
  one          1.0 (ComfyUI without input_scale),
  weight_scale the layer's weight_scale (older converters' text-encoder default),
  ws_x0.5      weight_scale x 0.5 (the research note's heuristic),
plus weight-only FP8 end to end. ``scripts/quality.py`` adds fp8stream's own scales beside these.

Usage: HF_HUB_OFFLINE=1 python scripts/quality_baselines.py [--k 1 100 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_models as qm  # noqa: E402

ScaleFn = Callable[[str], "qm.Scale | None"]


def baseline_sources(layers: Mapping[str, qm.FP8Layer], cal: qm.LinearInputs) -> dict[str, ScaleFn]:
    return {
        "dynamic": lambda n: "dynamic",
        "real_max": lambda n: cal.amax(n) / qm.FP8_MAX,
        "one": lambda n: 1.0,
        "weight_scale": lambda n: float(layers[n].weight_scale),
        "ws_x0.5": lambda n: 0.5 * float(layers[n].weight_scale),
    }


def per_layer(rec: qm.LinearInputs, layers: Mapping[str, qm.FP8Layer], bias: Callable[[str], torch.Tensor | None],
              sources: Mapping[str, ScaleFn]) -> dict[str, dict]:
    rows = {}
    for n, L in layers.items():
        row = {s: qm.fp8_linear_quality(rec.calls(n), L.weight, L.weight_scale, fn(n), bias(n))
               for s, fn in sources.items()}
        row["amax"] = rec.amax(n)
        rows[n] = row
    return rows


def print_summary(tag: str, rows: Mapping[str, dict], e2e: Mapping[str, float], e2e_label: str) -> None:
    am = [r["amax"] for r in rows.values()]
    print(f"\n== {tag}: {len(rows)} FP8 linears, input amax {min(am):.3g} .. {max(am):.3g} "
          f"(median {statistics.median(am):.3g})")
    print(f"  {'source':12s} {'SQNR min':>8s} {'median':>7s} {'worst vs dyn':>12s} {'>0.5dB below dyn':>16s} "
          f"{'clip>0.1%':>9s} {'max clip':>8s} {e2e_label:>10s}")
    for s in e2e:
        if s not in next(iter(rows.values())):
            print(f"  {s:12s} {'':>8s} {'':>7s} {'':>12s} {'':>16s} {'':>9s} {'':>8s} {e2e[s]:10.4f}")
            continue
        sq = [r[s]["sqnr_db"] for r in rows.values()]
        cl = [r[s]["clipped"] for r in rows.values()]
        d = [r[s]["sqnr_db"] - r["dynamic"]["sqnr_db"] for r in rows.values()]
        print(f"  {s:12s} {min(sq):8.2f} {statistics.median(sq):7.2f} {min(d):+12.2f} {sum(x < -0.5 for x in d):16d} "
              f"{sum(c > 1e-3 for c in cl):9d} {max(cl):8.4f} {e2e[s]:10.4f}")


def minilm_baselines(tmp: Path) -> dict:
    model, tok = qm.load_minilm()
    qm.write_minilm_fp8(model, tmp / "minilm_fp8.safetensors")
    layers = qm.read_fp8_layers(tmp / "minilm_fp8.safetensors")
    rec = qm.record_linear_inputs(model, lambda: qm.embed(model, tok, qm.EVALUATION_SENTENCES))
    cal = qm.record_linear_inputs(model, lambda: qm.embed(model, tok, qm.CALIBRATION_SENTENCES))
    mods = dict(model.named_modules())
    src = baseline_sources(layers, cal)
    rows = per_layer(rec, layers, lambda n: mods[n].bias, src)
    e2e = {s: qm.minilm_end_to_end(model, tok, layers, {n: fn(n) for n in layers}) for s, fn in src.items()}
    e2e["weight_only"] = qm.minilm_end_to_end(model, tok, layers, {n: None for n in layers})
    print_summary("MiniLM (32 eval sentences; real_max from the 32 calibration sentences)", rows, e2e, "cosine")
    return {"layers": rows, "end_to_end_cosine": e2e}


def flux_baselines(tmp: Path, k: float, n: int, steps: int) -> dict:
    tf = qm.load_tiny_flux()
    if k != 1:
        tf = qm.rescaled_copy(tf, k)
    qm.write_tiny_flux_fp8(tf, tmp / "flux_fp8.safetensors")
    layers = qm.read_fp8_layers(tmp / "flux_fp8.safetensors")
    run = lambda seed: qm.flux_inputs_by_comfy_name(  # noqa: E731
        qm.record_linear_inputs(tf.model, lambda: qm.sample(tf, n, steps, seed=seed)), tf.config)
    rec, cal = run(0), run(1)
    sd = qm.diffusers_to_comfy(tf.model.state_dict(), tf.config)
    src = baseline_sources(layers, cal)
    rows = per_layer(rec, layers, lambda name: sd[name + ".bias"], src)
    e2e = {s: qm.flux_end_to_end(tf, layers, {m: fn(m) for m in layers}, n, steps, 0) for s, fn in src.items()}
    e2e["weight_only"] = qm.flux_end_to_end(tf, layers, {m: None for m in layers}, n, steps, 0)
    print_summary(f"tiny Flux DiT, k={k:g} ({n} samples x {steps} steps, seed 0; real_max from seed 1)",
                  rows, e2e, "SQNR dB")
    return {"k": k, "layers": rows, "end_to_end_sample_sqnr_db": e2e}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=float, nargs="*", default=[1.0, 100.0, 1000.0], help="DiT rescaling factors")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--per-layer", action="store_true", help="print every layer of the DiT")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.monotonic()
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        out["minilm"] = minilm_baselines(Path(d))
        for k in args.k:
            res = flux_baselines(Path(d), k, args.samples, args.steps)
            out[f"flux_k{k:g}"] = res
            if args.per_layer:
                for name, r in res["layers"].items():
                    print(f"    {name:34s} amax {r['amax']:9.3f} " + " ".join(
                        f"{s} {r[s]['sqnr_db']:6.2f}" for s in ("dynamic", "real_max", "one", "weight_scale")))
    print(f"\n({time.monotonic() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
