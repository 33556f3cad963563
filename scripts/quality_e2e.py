"""How much each judged figure of the quality bars moves with noise (issue 22, item 5), and the
end to end over several sampling runs.

--spread: for each model, the figures tests/test_quality_bars.py judges (the default's share of
layers within 0.5 dB of dynamic, its layers clipping > 0.1%, its weight-only layers, its and
`--method stats`'s end to end in dB against dynamic, and the default's against 1.0 on MiniLM), under each noise
source that can differ between two machines: torch threads 1 vs 2 (the CLI's --forward-threads
too), every CLI scale multiplied by 1 +- 1e-6 (last bits), and other sampling noise (seeds 1, 2;
DiTs). Each line is one variant; the spread of a figure is its largest distance from the base
run (threads 1, seed 0). Last, a planted regression: the default's file with its tightest
layer's scale 10x too small, judged the same way (what a margin must still catch).

    HF_HUB_OFFLINE=1 python scripts/quality_e2e.py --spread --models flux_k1 sd3 --samples 4 --steps 8

Without --spread: per seed, the SQNR in dB of a whole sampling run's samples against full
precision for dynamic scaling, the judged run's real max, the CLI's forward pass and every layer
weight-only (--sources: others of quality.py's, e.g. default and one), each CLI source's minus
dynamic's, then each source's mean over the seeds:

    HF_HUB_OFFLINE=1 python scripts/quality_e2e.py --model sd3 --samples 16 --steps 20 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import quality as Q
from fp8stream.harness import dit, judge, rescale

TEST_SOURCES = ["default", "stats_margin2", "one"]
PERTURBATION = 1e-6


def judge_model(model: str, a: argparse.Namespace, tmp: Path, threads: int, seed: int) -> tuple[Q.Case, dict]:
    tmp.mkdir()
    args = Q.parse(["--models", model, "--samples", str(a.samples), "--steps", str(a.steps), "--sentences",
                    str(a.sentences), "--threads", str(threads), "--seed", str(seed), "--quiet"])
    with Q.pinned(threads):
        case = Q.build_minilm(tmp, args) if model == "minilm" else Q.build_dit(tmp, model, args)
        return case, Q.judge_case(case, tmp, TEST_SOURCES, args, layered=["default"])


def layer_gaps(result: dict) -> dict[str, float]:
    """Each scaled layer's output SQNR minus dynamic's (dB): what 'within 0.5 dB' counts."""
    return judge.gaps_to_dynamic(result["layers"], "default")


def figures(result: dict, encoder: bool, base_gaps: dict[str, float] | None = None) -> dict[str, float]:
    """The judged figures, end to end in dB against dynamic (and against 1.0 on the encoder)."""
    out = {f"default.{k}": v for k, v in Q.judged_figures(result, "default", encoder).items()}
    out["stats_margin2.end_to_end"] = Q.judged_figures(result, "stats_margin2", encoder)["end_to_end"]
    if encoder:
        out["default.end_to_end_vs_one"] = Q.judged_figures(result, "default", encoder, "one")["end_to_end"]
    out["default.max_clip"] = result["summary"]["default"]["max_clip"]
    gaps = layer_gaps(result)
    out["default.nearest_layer_gap_to_-0.5dB"] = min(abs(x + 0.5) for x in gaps.values())
    if base_gaps is not None:
        out["default.layer_gap_moved_db"] = max(abs(gaps[n] - base_gaps[n]) for n in gaps.keys() & base_gaps.keys())
    return out


def perturbed(case: Q.Case, result: dict, factor: float) -> dict:
    sources = {s: (v if s in ("dynamic",) else {n: None if x is None else x * factor for n, x in v.items()})
               for s, v in result["scales"].items()}
    with Q.pinned(1):
        return Q.judge_sources(case, sources, {}, layered=["default"])


def planted(case: Q.Case, result: dict) -> tuple[str, dict]:
    """The default's scales with its tightest layer's (smallest scale over real amax) 10x too small."""
    rows = result["layers"]
    tight = min((n for n, r in rows.items() if "scale_ratio" in r["default"]),
                key=lambda n: rows[n]["default"]["scale_ratio"])
    sources = dict(result["scales"])
    sources["default"] = dict(sources["default"], **{tight: sources["default"][tight] / 10})
    with Q.pinned(1):
        return tight, Q.judge_sources(case, sources, {}, layered=["default"])


def spread(model: str, a: argparse.Namespace) -> None:
    encoder = model == "minilm"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        case, base = judge_model(model, a, tmp / "base", 1, 0)
        f0 = figures(base, encoder)
        report = {"model": model, "base": f0, "variants": {}}
        variants = {"threads2": lambda: judge_model(model, a, tmp / "t2", 2, 0)[1],
                    "scales*(1+1e-6)": lambda: perturbed(case, base, 1 + PERTURBATION),
                    "scales*(1-1e-6)": lambda: perturbed(case, base, 1 - PERTURBATION)}
        if not encoder:
            for s in a.seeds:
                variants[f"seed{s}"] = lambda s=s: judge_model(model, a, tmp / f"s{s}", 1, s)[1]
        for name, fn in variants.items():
            report["variants"][name] = figures(fn(), encoder, layer_gaps(base))
            print(json.dumps({"model": model, "variant": name, **report["variants"][name]}), flush=True)
        tight, bad = planted(case, base)
        report["planted"] = {"layer": tight, **figures(bad, encoder, layer_gaps(base))}
        print(json.dumps({"model": model, "variant": "base", **f0}), flush=True)
        print(json.dumps({"model": model, "variant": f"planted {tight} /10", **report["planted"]}), flush=True)


def seeds_mode(a: argparse.Namespace) -> None:
    model = a.models[0]
    args = Q.parse(["--models", model, "--samples", str(a.samples), "--steps", str(a.steps), "--threads", "1"])
    with tempfile.TemporaryDirectory() as d, Q.pinned(1):
        case = Q.build_dit(Path(d), model, args)
        family, _, variant = model.partition("_")
        tf = dit.load(dit.model_dir(family))
        tf = rescale.variant(tf, variant) if variant else tf
        sources, notes = Q.gather_sources(case, Path(d), ["dynamic", *a.sources], args)
        sources["weight_only"] = {n: None for n in case.layers}
        runs = []
        for seed in a.seeds:
            e2e = {s: dit.end_to_end(tf, case.layers, sc, a.samples, a.steps, seed) for s, sc in sources.items()}
            runs.append(e2e)
            print(f"{model} {a.samples}x{a.steps} seed {seed}: " + "  ".join(f"{k} {v:.2f}" for k, v in e2e.items())
                  + "".join(f"  {s} - dynamic {e2e[s] - e2e['dynamic']:+.2f}" for s in e2e if s in Q.CLI_SOURCES),
                  flush=True)
        mean = {s: sum(r[s] for r in runs) / len(runs) for s in sources}
        print(f"{model} {a.samples}x{a.steps} mean of seeds {' '.join(map(str, a.seeds))}: "
              + "  ".join(f"{k} {v:.2f}" for k, v in mean.items()) + "".join(f"  ({s} {n})" for s, n in notes.items()),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", "--model", nargs="+", required=True, choices=Q.MODELS)
    ap.add_argument("--spread", action="store_true", help="the judged figures under each noise source")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 1 2 with --spread, else 0 1 2 3")
    ap.add_argument("--sources", nargs="+", default=["real_max", "forward"], choices=Q.SOURCES + ["default"],
                    help="without --spread: the sources judged beside dynamic and every layer weight-only")
    a = ap.parse_args()
    a.seeds = a.seeds or ([1, 2] if a.spread else [0, 1, 2, 3])
    for model in a.models if a.spread else []:
        spread(model, a)
    if not a.spread:
        seeds_mode(a)


if __name__ == "__main__":
    main()
