"""End to end over several sampling runs: how much of a DiT's end-to-end figure is the noise of
one run (scripts/quality.py judges one run, seed 0). For each seed, the SQNR in dB of a whole
sampling run's samples against full precision, for dynamic scaling, the judged run's real max
(recorded on seed 0), the CLI's forward pass, and every layer weight-only.

    HF_HUB_OFFLINE=1 python scripts/quality_e2e.py --model sd3 --samples 16 --steps 20 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import quality as Q
from fp8stream.harness import dit, rescale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=[m for m in Q.MODELS if m != "minilm"])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    args = Q.parse(["--models", a.model, "--samples", str(a.samples), "--steps", str(a.steps)])
    family, _, variant = a.model.partition("_")
    tf = dit.load(dit.model_dir(family))
    if variant:
        tf = rescale.variant(tf, variant)
    with tempfile.TemporaryDirectory() as d:
        case = Q.build_dit(Path(d), a.model, args)
        sources, _ = Q.gather_sources(case, Path(d), ["dynamic", "real_max", "forward"], args)
        sources["weight_only"] = {n: None for n in case.layers}
        for seed in a.seeds:
            e2e = {s: dit.end_to_end(tf, case.layers, sc, a.samples, a.steps, seed) for s, sc in sources.items()}
            print(f"{a.model} {a.samples}x{a.steps} seed {seed}: " + "  ".join(f"{k} {v:.2f}" for k, v in e2e.items())
                  + f"  forward - dynamic {e2e['forward'] - e2e['dynamic']:+.2f}", flush=True)


if __name__ == "__main__":
    main()
