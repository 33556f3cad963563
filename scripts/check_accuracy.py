"""How good `fp8stream check`'s prediction is (issue 25), measured on the quality harness's DiTs.

For every harness DiT and three files (`one`: every FP8 layer without input_scale, which ComfyUI
runs at 1.0; `default`: the CLI's default output; `weight_only`: every layer flagged weight-only),
`fp8stream check FILE --json --min-sqnr 20` runs as a user would run it, and its predicted end to
end SQNR (the file as ComfyUI runs it, and dynamic per-tensor FP8) is set against the harness's
measured one: the SQNR of whole sampling runs' samples against full precision, the mean over
--seeds (scripts/quality_e2e.py's way; one run moves by about a dB). The bars (issue 25):

  - |predicted - measured| gap to dynamic FP8 <= 0.5 dB, and |predicted - measured| SQNR <= 2 dB,
    for each file on each DiT;
  - Spearman >= 0.7 between the layers' harm as check predicts it and as measured on the judged
    run's real inputs (harm: the layer's output SQNR gap to dynamic FP8, the order of check's
    "worst layers"; the static SQNR's Spearman is given beside), for the 1.0 and default files;
  - a planted bad layer (the default file, the middle of its FP8 attention layers by name, its
    input_scale / 100) is check's worst layer;
  - check's verdict says "unusable" exactly where the 1.0 file measures below 20 dB, and
    `--min-sqnr 20` exits non-zero there;
  - `--method stats` (stats recorded on another seed and other classes than every judged run)
    end to end within 1 dB of dynamic, the mean over the seeds.

--harm-models: for each FP8 layer alone (every other layer full precision, its own weights), the
end to end with that layer static FP8 at the default's scale, dynamic FP8, and weight-only, and
how well check's per-layer figures on the default's scales (every layer run FP8) rank that harm
(Spearman): static SQNR, gap to dynamic, clipped share, the output's noise energy.

    HF_HUB_OFFLINE=1 python scripts/check_accuracy.py --samples 16 --steps 20 --seeds 0 1 2 3 \
        --json /tmp/accuracy/a.json --markdown /tmp/accuracy/a.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from unittest import mock

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

import bench
import quality as Q
from fp8stream.formats.comfy_quant import is_weight_only
from fp8stream.harness import dit, judge, rescale
from fp8stream.harness.checkpoint import COMFY_QUANT_JSON, comfy_quant_tensor, read_fp8_layers
from fp8stream.harness.fp8 import fp8_model, sqnr_db
from fp8stream.names.suffixes import COMFY_MARKER, INPUT_SCALE

DITS = [m for m in Q.MODELS if m != "minilm"]  # MiniLM is an encoder: check's end to end there is not a sample SQNR
GAP_BAR_DB, SQNR_BAR_DB, SPEARMAN_BAR, STATS_BAR_DB, UNUSABLE_DB = 0.5, 2.0, 0.7, 1.0, 20.0
FILES = ("one", "default", "weight_only")


def marked_copy(src: Path, dst: Path, weight_only: Mapping[str, bool] = {},
                scale_factor: Mapping[str, float] = {}) -> Path:
    """src with the named layers' markers flagged weight-only (True) or not (False), and the named
    layers' input_scale multiplied (scales stay beside the flag); the metadata kept."""
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(src))
    for layer, flag in weight_only.items():
        sd[layer + COMFY_MARKER] = comfy_quant_tensor(dict(COMFY_QUANT_JSON, **(
            {"full_precision_matrix_mult": True} if flag else {})))
    for layer, factor in scale_factor.items():
        sd[layer + INPUT_SCALE] = sd[layer + INPUT_SCALE] * factor
    save_file(sd, str(dst), metadata=meta)
    return dst


def comfy_scales(path: Path) -> dict[str, float | None]:
    """Each FP8 layer as ComfyUI runs it (docs/comfyui.md): None weight-only, else the stored
    input_scale, 1.0 where there is none."""
    layers = read_fp8_layers(path)
    with safe_open(str(path), "pt") as f:
        flagged = {n: is_weight_only(json.loads(bytes(f.get_tensor(n + COMFY_MARKER).tolist()))) for n in layers}
    return {n: None if flagged[n] else (1.0 if L.input_scale is None else L.input_scale) for n, L in layers.items()}


def run_check(path: Path, threads: int) -> dict:
    """`fp8stream check PATH --json --min-sqnr 20` in a child, as a user runs it; its JSON and exit code."""
    cmd = [sys.executable, "-m", "fp8stream", "check", str(path), "--json", "--no-progress", "--min-sqnr",
           str(UNUSABLE_DB), "--forward-threads", str(threads)]
    p = subprocess.run(cmd, env=bench.child_env(), capture_output=True, text=True, cwd=Q.REPO)
    doc = json.loads(p.stdout)
    return {"rc": p.returncode, "verdict": doc["verdict"], "comfy": _db(doc["end_to_end"]["comfy"]),
            "dynamic": _db(doc["end_to_end"]["dynamic"]), "layers": {L["name"]: L for L in doc["layers"]}}


def _db(stream: Mapping) -> float:
    return math.inf if stream["exact"] else stream["sqnr_db"]


def worst_layer(layers: Mapping[str, dict]) -> str:
    """check's worst layer: the reached FP8 layer furthest below dynamic (check_report.worst)."""
    return max((n for n, L in layers.items() if L["runs_fp8"] and L["reached"]), key=lambda n: layers[n]["gap_db"])


def rank_agreement(predicted: Mapping[str, float], measured: Mapping[str, float]) -> float | None:
    """Spearman's rank correlation over the layers both give (None: fewer than 3, or a constant side)."""
    names = sorted(predicted.keys() & measured.keys())
    a, b = [predicted[n] for n in names], [measured[n] for n in names]
    if len(names) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def layer_harm(check_layers: Mapping[str, dict], rows: Mapping[str, dict], source: str) -> dict:
    """Spearman of check's per-layer harm against the judged run's, by gap to dynamic and by
    static SQNR (higher = more harm on both sides), over the layers the file runs FP8."""
    fp8 = {n for n, L in check_layers.items() if L["runs_fp8"] and L["reached"] and not rows[n][source].get(
        "weight_only")}
    pred_gap = {n: check_layers[n]["gap_db"] for n in fp8}
    pred_static = {n: -check_layers[n]["static_sqnr_db"] for n in fp8}
    real_gap = {n: -gap for n, gap in judge.gaps_to_dynamic(rows, source).items() if n in fp8}
    real_static = {n: -rows[n][source]["sqnr_db"] for n in fp8}
    return {"layers": len(fp8), "spearman_gap": rank_agreement(pred_gap, real_gap),
            "gap_range": [min(real_gap.values()), max(real_gap.values())],
            "predicted_gap_range": [min(pred_gap.values()), max(pred_gap.values())],
            "spearman_static": rank_agreement(pred_static, real_static),
            "measured_worst": max(real_gap, key=real_gap.get), "predicted_worst": max(pred_gap, key=pred_gap.get)}


def planted_layer(scales: Mapping[str, float | None]) -> str:
    """The rule: the middle, by name, of the attention layers the default runs FP8."""
    attn = sorted(n for n, s in scales.items() if s is not None and "attn" in n)
    return attn[len(attn) // 2]


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def sampled(tf: dit.TinyDiT, layers: Mapping, sources: Mapping[str, Mapping], a: argparse.Namespace) -> dict:
    """source -> per seed, the samples' SQNR (dB) against full precision ("full") and against the
    every-layer-weight-only samples ("fp8_weights": what check's full-precision stream is, FP8
    weights dequantized)."""
    out: dict = {s: {"full": [], "fp8_weights": []} for s in sources}
    for seed in a.seeds:
        ref = dit.sample(tf, a.samples, a.steps, seed)
        every_weight_only = {n: None for n in layers}
        ref_w = dit.fp8_sample(tf, layers, every_weight_only, a.samples, a.steps, seed)
        for s, scales in sources.items():  # the all-weight-only file is ref_w's run again
            x = ref_w if scales == every_weight_only else dit.fp8_sample(tf, layers, scales, a.samples, a.steps, seed)
            out[s]["full"].append(sqnr_db(ref, x))
            out[s]["fp8_weights"].append(sqnr_db(ref_w, x))
    return out


def one_call(tf: dit.TinyDiT, layers: Mapping, sources: Mapping[str, Mapping], a: argparse.Namespace) -> dict:
    """source -> per seed, check's own quantity on real inputs: the SQNR (dB) of one model call's
    output against the every-layer-weight-only model's on the same input, over every step of a
    full-precision sampling run (check's end to end is one call per sample, against FP8 weights
    dequantized; the samples' SQNR above is a whole run's against the unquantized model)."""
    weights = dit.fp8_weights(tf, layers)
    per_seed = [_one_call_run(tf, weights, layers, sources, a, seed) for seed in a.seeds]
    return {s: [run[s] for run in per_seed] for s in sources}


def _one_call_run(tf: dit.TinyDiT, weights: Mapping, layers: Mapping, sources: Mapping[str, Mapping],
                  a: argparse.Namespace, seed: int) -> dict[str, float]:
    velocity = dit.velocity
    signal, noise = [0.0], dict.fromkeys(sources, 0.0)

    def step(tf_, x, t, labels, **kw):
        with fp8_model(tf.model, weights, dit.module_scales(tf, dict.fromkeys(layers))):
            ref = velocity(tf_, x, t, labels, **kw)
        signal[0] += float(ref.double().square().sum())
        for s, scales in sources.items():
            with fp8_model(tf.model, weights, dit.module_scales(tf, scales)):
                noise[s] += float((velocity(tf_, x, t, labels, **kw) - ref).double().square().sum())
        return velocity(tf_, x, t, labels, **kw)  # the full-precision run's step

    with mock.patch.object(dit, "velocity", step):
        dit.sample(tf, a.samples, a.steps, seed)
    return {s: math.inf if n == 0 else 10 * math.log10(signal[0] / n) for s, n in noise.items()}


def load_dit(name: str) -> dit.TinyDiT:
    family, _, variant = name.partition("_")
    tf = dit.load(dit.model_dir(family))
    return rescale.variant(tf, variant) if variant else tf


def judge_model(name: str, a: argparse.Namespace, tmp: Path) -> dict:
    """One DiT: its files checked by the CLI, measured end to end over the seeds and per layer
    on the judged run (seed --record-seed; stats recorded on --record-seed + 1)."""
    args = Q.parse(["--models", name, "--samples", str(a.samples), "--steps", str(a.steps), "--threads",
                    str(a.threads), "--seed", str(a.record_seed), "--quiet"])
    case = Q.build_dit(tmp, name, args)
    cli, notes = Q.gather_sources(case, tmp, ["default", "stats_margin2"], args)
    files = {"one": case.ckpt, "default": tmp / f"{name}_default.safetensors"}
    files["weight_only"] = marked_copy(case.ckpt, tmp / f"{name}_weight_only.safetensors",
                                       dict.fromkeys(case.layers, True))
    bad = planted_layer(comfy_scales(files["default"]))
    files["planted"] = marked_copy(files["default"], tmp / f"{name}_planted.safetensors", {}, {bad: 0.01})
    checks = {f: run_check(p, a.threads) for f, p in files.items()}
    scales = {"dynamic": {n: "dynamic" for n in case.layers}, **{f: comfy_scales(p) for f, p in files.items()},
              "stats_margin2": cli["stats_margin2"]}
    tf = load_dit(name)
    e2e = sampled(tf, case.layers, scales, a)
    for s, per_seed in one_call(tf, case.layers, scales, a).items():
        e2e[s]["one_call"] = per_seed
    rows = judge.per_layer(case.rec, case.layers, case.bias, {s: scales[s] for s in ("dynamic", "one", "default")})
    out = {"title": case.title, "notes": notes, "planted_layer": bad, "end_to_end": e2e, "harm": {}, "check": {
        f: {k: v for k, v in c.items() if k != "layers"} for f, c in checks.items()}}
    for f in ("one", "default"):
        out["harm"][f] = layer_harm(checks[f]["layers"], rows, f)
    out["check"]["planted"]["worst"] = worst_layer(checks["planted"]["layers"])
    out["check"]["planted"]["worst_gap_db"] = checks["planted"]["layers"][out["check"]["planted"]["worst"]]["gap_db"]
    if name in a.harm_models:
        out["layer_harm"] = layer_harm_study(tf, case.layers, files["default"], tmp, a)
    return out


def check_figures(path: Path, threads: int) -> dict[str, dict]:
    """check's per-layer figures on PATH, in this process, with the output noise energy its report
    leaves out (the pass's LayerFigures, taken from the report's builder)."""
    from fp8stream import check_report
    from fp8stream.commands.check import check_file
    from fp8stream.methods.settings import CalibrationSettings
    from fp8stream.names.suffixes import WEIGHT

    caught = {}
    build = check_report.build

    def keep(name, runs, comparison, min_sqnr):
        caught["figures"] = comparison.layers
        return build(name, runs, comparison, min_sqnr)

    with mock.patch.object(check_report, "build", keep):
        report = check_file(str(path), CalibrationSettings("forward", device="cpu", forward_threads=threads), False,
                            None)
    return {L.name: {"static_sqnr_db": L.static_sqnr_db, "gap_db": L.gap_db, "clipped": L.clipped,
                     "noise": caught["figures"][L.name + WEIGHT].static_noise} for L in report.layers if L.reached}


def layer_harm_study(tf: dit.TinyDiT, layers: Mapping, default_file: Path, tmp: Path, a: argparse.Namespace) -> dict:
    """Each FP8 layer alone in FP8 (every other layer full precision, its own weights): the end
    to end (dB, mean over the seeds) with its input static at the default's scale, dynamic, and
    weight-only; check's figures on the default's scales with every layer run FP8, and check's
    end to end on a file where that layer alone runs FP8 (the rest weight-only); and how each of
    check's figures ranks the measured harm (Spearman, higher = more harm on both sides)."""
    default = comfy_scales(default_file)
    all_fp8 = marked_copy(default_file, tmp / "all_fp8.safetensors", dict.fromkeys(layers, False))
    scales = comfy_scales(all_fp8)
    weights = dit.fp8_weights(tf, layers)
    parts = {lm.comfy: lm.parts for lm in tf.fam.linear_maps(tf.config)}
    refs = {seed: dit.sample(tf, a.samples, a.steps, seed) for seed in a.seeds}
    measured: dict[str, dict] = {}
    for n in layers:
        own = {p: weights[p] for p in parts[n]}
        measured[n] = {mode: mean([dit.end_to_end(tf, layers, {n: s}, a.samples, a.steps, seed, ref=refs[seed],
                                                  weights=own) for seed in a.seeds])
                       for mode, s in (("static", scales[n]), ("dynamic", "dynamic"), ("weight_only", None))}
        measured[n]["conditioning"] = default[n] is None  # kept weight-only by the default today
        alone = marked_copy(all_fp8, tmp / "alone.safetensors", {m: m != n for m in layers})
        measured[n]["check_alone_db"] = run_check(alone, a.threads)["comfy"]
    figures = check_figures(all_fp8, a.threads)
    harm = {"e2e_static": {n: -m["static"] for n, m in measured.items()},
            "e2e_gap": {n: m["dynamic"] - m["static"] for n, m in measured.items()},
            "e2e_activation": {n: 10 ** (-m["static"] / 10) - 10 ** (-m["weight_only"] / 10)
                               for n, m in measured.items()}}
    proxies = {"static_sqnr": {n: -f["static_sqnr_db"] for n, f in figures.items()},
               "gap_to_dynamic": {n: f["gap_db"] for n, f in figures.items()},
               "clipped": {n: f["clipped"] for n, f in figures.items()},
               "noise_energy": {n: f["noise"] for n, f in figures.items()},
               "check_e2e_alone": {n: -m["check_alone_db"] for n, m in measured.items()}}
    return {"layers": {n: {**measured[n], **figures.get(n, {})} for n in layers},
            "spearman": {p: {h: rank_agreement(v, hv) for h, hv in harm.items()} for p, v in proxies.items()}}


def ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def f2(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else ("exact" if math.isinf(x) else format(x, spec))


def prediction_rows(name: str, r: Mapping) -> list[dict]:
    """Per file: check's SQNR and gap to dynamic against the measured means, and the two bars."""
    e2e = {s: mean(v["full"]) for s, v in r["end_to_end"].items()}
    out = []
    for f in FILES:
        c = r["check"][f]
        pred_gap, real_gap = c["comfy"] - c["dynamic"], e2e[f] - e2e["dynamic"]
        row = {"model": name, "file": f, "predicted": c["comfy"], "measured": e2e[f],
               "measured_fp8_weights": mean(r["end_to_end"][f]["fp8_weights"]),
               "measured_one_call": mean(r["end_to_end"][f]["one_call"]), "sqnr_error": c["comfy"] - e2e[f],
               "predicted_gap": pred_gap, "measured_gap": real_gap, "gap_error": pred_gap - real_gap}
        row["gap_bar"] = abs(row["gap_error"]) <= GAP_BAR_DB
        row["sqnr_bar"] = abs(row["sqnr_error"]) <= SQNR_BAR_DB
        out.append(row)
    return out


def markdown(results: Mapping[str, dict], a: argparse.Namespace) -> str:
    setting = f"{a.samples} samples x {a.steps} steps, mean of seeds {' '.join(map(str, a.seeds))}"
    return "\n".join(prediction_lines(results, setting) + [""] + ranking_lines(results) + [""]
                     + planted_lines(results) + [""] + stats_lines(results) + [""] + harm_lines(results)) + "\n"


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table: the header, its rule, one line per row."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def prediction_lines(results: Mapping[str, dict], setting: str) -> list[str]:
    rows = [[name, w["file"], f2(w["predicted"]), f2(w["measured"]), f2(w["sqnr_error"], "+.2f"),
             f2(w["predicted_gap"], "+.2f"), f2(w["measured_gap"], "+.2f"), f2(w["gap_error"], "+.2f"),
             ok(w["gap_bar"]), ok(w["sqnr_bar"]), f2(w["measured_fp8_weights"]), f2(w["measured_one_call"])]
            for name, r in results.items() for w in prediction_rows(name, r)]
    dynamic = [[name, f2(r["check"]["default"]["dynamic"]), f2(mean(d["full"])), f2(mean(d["fp8_weights"])),
                f2(mean(d["one_call"]))]
               for name, r in results.items() for d in [r["end_to_end"]["dynamic"]]]
    return [f"## check's prediction against the harness ({setting})", ""] + table(
        ["model", "file", "check dB", "measured dB", "error", "check gap to dynamic", "measured gap", "error",
         "gap bar (0.5 dB)", "SQNR bar (2 dB)", "measured vs FP8-weight samples", "measured one call vs FP8 weights"],
        rows) + [""] + table(["model", "check dynamic dB", "measured dynamic dB",
                              "measured dynamic vs FP8-weight samples", "measured one call vs FP8 weights"], dynamic)


def ranking_lines(results: Mapping[str, dict]) -> list[str]:
    rows = [[name, f, h["layers"], f2(h["spearman_gap"]),
             ok(h["spearman_gap"] is not None and h["spearman_gap"] >= SPEARMAN_BAR), f2(h["spearman_static"]),
             h["predicted_worst"], h["measured_worst"], f"{h['gap_range'][0]:+.2f}..{h['gap_range'][1]:+.2f}",
             f"{h['predicted_gap_range'][0]:+.2f}..{h['predicted_gap_range'][1]:+.2f}"]
            for name, r in results.items() for f, h in r["harm"].items()]
    return ["## Layers ranked by harm: check against the judged run's real inputs", ""] + table(
        ["model", "file", "FP8 layers", "Spearman (gap to dynamic)", "bar (0.7)", "Spearman (static SQNR)",
         "check's worst", "measured worst", "gaps measured (dB)", "gaps predicted (dB)"], rows)


def planted_lines(results: Mapping[str, dict]) -> list[str]:
    rows = []
    for name, r in results.items():
        p, one = r["check"]["planted"], r["check"]["one"]
        measured = mean(r["end_to_end"]["one"]["full"])
        unusable = measured < UNUSABLE_DB
        verdict_ok = one["verdict"].startswith("unusable") == unusable and (one["rc"] != 0) == unusable
        rows.append([name, r["planted_layer"], p["worst"], f2(p["worst_gap_db"], ".1f"),
                     "yes" if p["worst"] in p["verdict"] else "no", ok(p["worst"] == r["planted_layer"]),
                     f2(measured), one["verdict"], one["rc"], ok(verdict_ok)])
    return ["## A planted bad layer, and the 1.0 file's verdict", ""] + table(
        ["model", "planted (input_scale / 100)", "check's worst", "its gap dB", "named in the verdict", "bar",
         "1.0 measured dB", "check on 1.0: verdict", "--min-sqnr 20 exit", "bar"], rows)


def stats_lines(results: Mapping[str, dict]) -> list[str]:
    rows = []
    for name, r in results.items():
        d, s = r["end_to_end"]["dynamic"]["full"], r["end_to_end"]["stats_margin2"]["full"]
        gap = mean(s) - mean(d)
        rows.append([name, f"{mean(d):.2f}", f"{mean(s):.2f}", f"{gap:+.2f}", ok(gap >= -STATS_BAR_DB),
                     ", ".join(f"{x - y:+.2f}" for x, y in zip(s, d, strict=True))])
    return ["## `--method stats` (x 2, capped) end to end against dynamic", ""] + table(
        ["model", "dynamic", "stats", "stats - dynamic", "bar (>= -1 dB)", "per seed"], rows)


def harm_lines(results: Mapping[str, dict]) -> list[str]:
    studied = {n: r["layer_harm"] for n, r in results.items() if "layer_harm" in r}
    rows = [[name, proxy, f2(rhos["e2e_static"]), f2(rhos["e2e_gap"]), f2(rhos["e2e_activation"])]
            for name, h in studied.items() for proxy, rhos in h["spearman"].items()]
    lines = ["## Each layer alone in FP8: measured end-to-end harm, and how check's figures rank it", ""] + table(
        ["model", "check's figure", "Spearman vs e2e SQNR (layer static)", "vs e2e gap to dynamic",
         "vs e2e activation noise (static - weight-only)"], rows)
    for name, h in studied.items():
        ranked = sorted(h["layers"].items(), key=lambda kv: kv[1]["static"])
        rows = [[f"{n}{' (cond)' if m['conditioning'] else ''}", f"{m['static']:.2f}", f"{m['dynamic']:.2f}",
                 f"{m['weight_only']:.2f}", f2(m.get("static_sqnr_db")), f2(m.get("gap_db")),
                 f2(m.get("clipped"), ".2g"), f2(m.get("noise"), ".3g"), f2(m["check_alone_db"])]
                for n, m in ranked[:12]]
        lines += ["", f"{name}: layers by e2e harm (the layer alone static at the default's scale), the 12 most "
                  "harmful; `cond`: kept weight-only by the default today", ""] + table(
            ["layer", "e2e static dB", "e2e dynamic dB", "e2e weight-only dB", "check static dB", "check gap dB",
             "check clipped", "noise energy", "check e2e, layer alone FP8"], rows)
        cond = [i + 1 for i, (n, m) in enumerate(ranked) if m["conditioning"]]
        lines.append(f"\n{name}: the conditioning layers' ranks by e2e harm (1 = most harmful, of {len(ranked)}): "
                     f"{cond}")
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DITS, choices=DITS)
    ap.add_argument("--samples", type=int, default=16, help="samples per sampling run")
    ap.add_argument("--steps", type=int, default=20, help="Euler steps per sampling run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="the judged end-to-end runs")
    ap.add_argument("--record-seed", type=int, default=100,
                    help="the run whose real inputs judge each layer (stats recorded on this + 1, other classes)")
    ap.add_argument("--harm-models", nargs="*", default=["flux_k1", "sd3", "sd3_outlier50"], choices=DITS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, also check's --forward-threads")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory() as d, Q.pinned(a.threads):
        for name in a.models:
            (Path(d) / name).mkdir()
            results[name] = judge_model(name, a, Path(d) / name)
            print(f"{name}: done", flush=True)
    text = markdown(results, a)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                                      "results": results}, indent=1, default=lambda v: None))
    if a.markdown:
        a.markdown.write_text(text)
    return results


if __name__ == "__main__":
    main()
