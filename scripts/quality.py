"""The quality harness (issues 4 and 12): every scale source judged on each model's real inputs.

Models (fp8stream.harness): MiniLM (encoder); the tiny Flux DiT as trained (k1), rescaled by
k (k100, k1000: every modulated input k times larger), split256 (single-block linear2's
attention half 256x its MLP half) and outlier50 (two channels 50x through AdaLN rows and V
projections): all function-preserving; the tiny SD3 MMDiT as trained and sd3_outlier50 (the same
two channels 50x through its AdaLN rows and both streams' V projections); the tiny Wan model. Each is
written as a ComfyUI FP8 checkpoint and calibrated with the CLI; the true input of every FP8
linear over the judged run is recorded and each layer is run in FP8 through comfy-kitchen.

Sources: dynamic (amax/448 per call: the ceiling), real_max (static max of the judged run),
stats_max (`fp8stream.record` on OTHER inputs than the judged run: other seed and other class
prompts / sentences, then `--method stats --stats-margin 1`: the recorded max), stats_margin2
(the same stats through `--method stats` with its default rule: the recorded max x 2, capped by
the hard bound where it is a proof; fp8stream/scales/margin.py), sim_bound (`--method simulate`, today's default),
sim_hybrid4 (`--sim-mode hybrid --margin 4`), forward (`--method forward`, skipped with a note
where the CLI has no such method; --forward-path runs another checkout's CLI), one (1.0),
default (the CLI without --method). End to end: MiniLM embedding cosine; DiTs the SQNR (dB) of
a whole sampling run's samples against full precision.

Torch runs on --threads (default 1, also the CLI's --forward-threads) with deterministic
algorithms, so a run gives the same figures on every machine; this checkout's CLI runs in
this process (the scales are bit-identical to a child's), another checkout's in a child.

Usage: HF_HUB_OFFLINE=1 python scripts/quality.py [--models ...] [--samples 8 --steps 10]
       [--json q.json] [--markdown q.md] [--forward-path /path/to/checkout]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import fp8stream  # noqa: E402
from fp8stream.cli import main as cli_main  # noqa: E402
from fp8stream.harness import dit, judge, minilm, rescale  # noqa: E402
from fp8stream.harness.checkpoint import FP8Layer, read_fp8_layers  # noqa: E402
from fp8stream.harness.fp8 import FP8_MAX, Scale, pinned  # noqa: E402
from fp8stream.harness.record import LinearInputs, record_linear_inputs  # noqa: E402

MODELS = ["minilm", "flux_k1", "flux_k100", "flux_k1000", "flux_split256", "flux_outlier50", "sd3", "sd3_outlier50",
          "wan"]
CLI_SOURCES: dict[str, list[str]] = {
    "stats_max": ["--method", "stats", "--stats-margin", "1"],  # + --stats FILE
    "stats_margin2": ["--method", "stats"],  # + --stats FILE: the default rule (x STATS_MARGIN, capped)
    "sim_bound": ["--method", "simulate", "--sim-mode", "bound"],
    "sim_hybrid4": ["--method", "simulate", "--sim-mode", "hybrid", "--margin", "4"],
    "forward": ["--method", "forward"],
    "default": [],
}
SOURCES = ["dynamic", "real_max", "stats_max", "stats_margin2", "sim_bound", "sim_hybrid4", "forward", "one"]


@dataclass
class Case:
    """One judged model: its FP8 file, real inputs, stats from other inputs, end-to-end figure."""

    name: str
    title: str
    encoder: bool
    ckpt: Path
    layers: dict[str, FP8Layer]
    rec: LinearInputs
    stats: Path
    bias: Callable[[str], torch.Tensor | None]
    e2e: Callable[[Mapping[str, Scale | None]], float]


def build_minilm(tmp: Path, args: argparse.Namespace) -> Case:
    model, tok = minilm.load_minilm()
    ckpt = tmp / "minilm_fp8.safetensors"
    minilm.write_minilm_fp8(model, ckpt)
    layers = read_fp8_layers(ckpt)
    sents = minilm.EVALUATION_SENTENCES[: args.sentences]
    refs: list[torch.Tensor] = []  # the recorded run's embeddings: the full-precision reference
    rec = record_linear_inputs(model, lambda: refs.append(minilm.embed(model, tok, sents)))
    stats = tmp / "minilm_stats.json"
    with fp8stream.record(model, str(stats)):  # other sentences than the judged ones
        minilm.embed(model, tok, minilm.CALIBRATION_SENTENCES)
    mods = dict(model.named_modules())
    return Case("minilm", f"MiniLM, {len(layers)} FP8 linears, {len(sents)} sentences", True, ckpt, layers, rec,
                stats, lambda n: mods[n].bias,
                lambda sc: minilm.minilm_end_to_end(model, tok, layers, sc, sents, ref=refs[0]))


def build_dit(tmp: Path, name: str, args: argparse.Namespace) -> Case:
    fam, _, var = name.partition("_")
    tf = dit.load(dit.model_dir(fam))
    if var:
        tf = rescale.variant(tf, var)
    ckpt = tmp / f"{name}.safetensors"
    dit.write_fp8(tf, ckpt)
    layers = read_fp8_layers(ckpt)
    n, steps, seed = args.samples, args.steps, args.seed
    refs: list[torch.Tensor] = []  # the recorded run's samples: the full-precision reference, sampled once
    rec = dit.record_by_comfy_name(tf, lambda: refs.append(dit.sample(tf, n, steps, seed=seed)))
    stats = tmp / f"{name}_stats.json"
    with fp8stream.record(tf.model, str(stats)):  # diffusers names: the built-in renaming tables match them
        dit.sample(tf, n, steps, seed=seed + 1, labels=(torch.arange(n) + 3) % 10)  # other noise, other prompts
    sd = dit.comfy_state(tf)
    weights = dit.fp8_weights(tf, layers)
    amax = [rec.amax(m) for m in layers]
    title = (f"tiny {fam} {var or ''} ({len(layers)} FP8 linears, {n} samples x {steps} steps, input amax "
             f"{min(amax):.3g}..{max(amax):.3g})")
    return Case(name, title, False, ckpt, layers, rec, stats, lambda m: sd.get(m + ".bias"),
                lambda sc: dit.end_to_end(tf, layers, sc, n, steps, seed, ref=refs[0], weights=weights))


def cli_scales(case: Case, out: Path, extra: list[str], pythonpath: str,
               threads: int) -> dict[str, float | None] | str:
    """Calibrate the case's file with the CLI, its torch threads pinned; per-layer input_scale
    (None: kept weight-only), or the CLI's last error line. This checkout's CLI runs in this
    process (the same command, without a second interpreter's imports); another checkout's in a
    child with the same threads."""
    argv = ["calibrate", "--force", "--device", "cpu", "--no-progress", "--forward-threads", str(threads),
            str(case.ckpt), str(out), *extra]
    if pythonpath == str(REPO):
        r = CliRunner().invoke(cli_main, argv)
        crash = r.exception is not None and not isinstance(r.exception, SystemExit)  # a traceback, not an exit
        code, text = r.exit_code, r.output + (f"\n{r.exception!r}" if crash else "")
    else:
        pin = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1", **pin)
        # cwd: `python -m` puts it first on sys.path, ahead of PYTHONPATH (and of an editable install).
        p = subprocess.run([sys.executable, "-m", "fp8stream", *argv], env=env, capture_output=True, text=True,
                           cwd=pythonpath)
        code, text = p.returncode, p.stderr or p.stdout
    if code != 0:
        lines = text.strip().splitlines()
        return f"exit {code}: {lines[-1] if lines else ''}"
    return {n: L.input_scale for n, L in read_fp8_layers(out).items()}


def gather_sources(case: Case, tmp: Path, wanted: list[str], args: argparse.Namespace):
    """source -> {layer: scale | "dynamic" | None}, and source -> why it was skipped."""
    src: dict[str, dict] = {"dynamic": {n: "dynamic" for n in case.layers},
                            "real_max": {n: case.rec.amax(n) / FP8_MAX for n in case.layers}}
    notes: dict[str, str] = {}
    for s in [s for s in CLI_SOURCES if s in wanted]:
        extra = CLI_SOURCES[s] + (["--stats", str(case.stats)] if s.startswith("stats_") else [])
        path = args.forward_path if (s == "forward" and args.forward_path) else str(REPO)
        got = cli_scales(case, tmp / f"{case.name}_{s}.safetensors", extra, path, args.threads)
        if isinstance(got, str):
            notes[s] = f"skipped: {got}"
        else:
            src[s] = got
    if "one" in wanted:
        src["one"] = {n: 1.0 for n in case.layers}
    order = ["dynamic"] + [s for s in wanted if s != "dynamic"]
    return {s: src[s] for s in order if s in src}, notes


def judge_case(case: Case, tmp: Path, wanted: list[str], args: argparse.Namespace,
               layered: list[str] | None = None) -> dict:
    """Every wanted source's figures and bars. ``layered``: the sources that get per-layer
    figures and bars (with dynamic); the others get their end to end only. None: all, with
    the every-layer-weight-only end to end (the README's tables)."""
    sources, notes = gather_sources(case, tmp, wanted, args)
    return judge_sources(case, sources, notes, layered)


def judge_sources(case: Case, sources: Mapping[str, Mapping[str, Scale | None]], notes: Mapping[str, str],
                  layered: list[str] | None = None) -> dict:
    """judge_case on given scales: source -> layer -> scale ("dynamic", or None: weight-only)."""
    per_layer = {s: v for s, v in sources.items() if layered is None or s == "dynamic" or s in layered}
    rows = judge.per_layer(case.rec, case.layers, case.bias, per_layer)
    e2e = {s: case.e2e(sc) for s, sc in sources.items()}
    if layered is None:
        e2e["weight_only"] = case.e2e({n: None for n in case.layers})
    summary = judge.summarize(rows, e2e)
    label = "cosine" if case.encoder else "sample SQNR dB"
    table = judge.markdown(case.title, summary, label, notes)
    bars = {s: judge.bars(summary, s, case.encoder) for s in per_layer
            if s != "dynamic" and (not case.encoder or "one" in summary)}
    return {"title": case.title, "layers": rows, "summary": summary, "skipped": notes, "bars": bars,
            "markdown": table, "scales": dict(sources)}


def end_to_end_db(summary: Mapping[str, dict], source: str, encoder: bool) -> float:
    """A source's end to end in dB: DiTs the samples' SQNR; the encoder the embeddings' SQNR from
    their mean cosine, -10 log10(2 - 2 cos) (exact for unit vectors: |a - b|^2 = 2 - 2 cos)."""
    e2e = summary[source]["end_to_end"]
    return -10.0 * math.log10(max(2.0 - 2.0 * e2e, 1e-30)) if encoder else e2e


def judged_figures(result: Mapping, source: str, encoder: bool, reference: str = "dynamic") -> dict[str, float]:
    """The figures the bars judge for one source: the share of layers within 0.5 dB of dynamic
    (%), the layers clipping > 0.1% (count), the share kept weight-only (%; these three with
    per-layer figures only), and the end to end in dB minus the reference source's."""
    s = result["summary"]
    v = s[source]
    out = {"end_to_end": end_to_end_db(s, source, encoder) - end_to_end_db(s, reference, encoder)}
    if "max_clip" in v:
        out.update({"within": v["pct_within_0.5dB_of_dynamic"], "clip": float(v["layers_clip_over_0.1pct"]),
                    "weight_only": 100.0 * v["weight_only_layers"] / v["layers"]})
    return out


def bars_table(results: Mapping[str, dict]) -> str:
    """Which source passes which bar on which model: 'pass', or the bars it misses."""
    sources = sorted({s for r in results.values() for s in r["bars"]}, key=lambda s: (SOURCES + ["default"]).index(s))
    lines = ["| source | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for s in sources:
        cells = []
        for r in results.values():
            b = r["bars"].get(s)
            cells.append("-" if b is None
                         else ("pass" if all(b.values()) else ", ".join(k for k, ok in b.items() if not ok)))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    out: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as d, pinned(args.threads):
        tmp = Path(d)
        for name in args.models:
            t0 = time.monotonic()
            case = build_minilm(tmp, args) if name == "minilm" else build_dit(tmp, name, args)
            out[name] = judge_case(case, tmp, args.sources, args)
            args.quiet or print(f"\n{out[name]['markdown']}({time.monotonic() - t0:.0f} s)", flush=True)
    out["bars_markdown"] = bars_table({m: out[m] for m in args.models})
    args.quiet or print("\nBars (issue 12) per source and model:\n" + out["bars_markdown"])
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    ap.add_argument("--sources", nargs="*", default=SOURCES, choices=SOURCES + ["default"])
    ap.add_argument("--samples", type=int, default=8, help="DiT: samples per sampling run")
    ap.add_argument("--steps", type=int, default=10, help="DiT: Euler steps per sampling run")
    ap.add_argument("--sentences", type=int, default=len(minilm.EVALUATION_SENTENCES))
    ap.add_argument("--forward-path", default=None, help="PYTHONPATH for the forward source's CLI (another checkout)")
    ap.add_argument("--seed", type=int, default=0, help="DiT: the judged run's noise (stats: seed + 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, also the CLI's --forward-threads (1: the same sums on every machine)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = run(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1,
                                        default=lambda v: None if isinstance(v, float) and math.isinf(v) else v))
    if args.markdown:
        args.markdown.write_text("\n".join(out[m]["markdown"] for m in args.models) + "\n" + out["bars_markdown"])
    return out


if __name__ == "__main__":
    main()
