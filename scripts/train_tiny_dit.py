"""Train a tiny DiT of the quality harness (Flux, SD3 or Wan architecture) on scikit-learn's 8x8 digits (CPU, minutes).

Rectified flow: x_t = (1-t)·x0 + t·noise, the model predicts v = noise − x0, t drawn
logit-normal (as SD3/Flux train). Conditioning is a learned per-class "prompt" (4 tokens for
``encoder_hidden_states``, one vector for ``pooled_projections``); guidance is embedded
(drawn uniformly in [1, 5] while training, 3.5 when sampling) so the guidance_in layers exist
and see real inputs, as in Flux-dev (SD3 and Wan have no guidance input). Training stops after
``--minutes`` of wall time, or after ``--steps`` (bit-reproducible on one machine and torch).
The models and their key names live in ``fp8stream.harness`` (``flux``, ``sd3``, ``wan``).

Writes, under ``--out`` (default tests/data/tiny_<family>/):
* ``tiny_<family>.safetensors``: F32 weights under ComfyUI's key names for the family;
* ``conditioning.safetensors``: the class embeddings (not part of a Flux checkpoint);
* ``config.json``: the diffusers config, the training settings and the measured losses.

Usage: HF_HUB_OFFLINE=1 python scripts/train_tiny_dit.py [--family flux|sd3|wan] --minutes 4 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fp8stream.harness import dit  # noqa: E402
from fp8stream.harness.digits import (  # noqa: E402
    NUM_CLASSES,
    ClassConditioning,
    digit_classifier,
    load_digits_tokens,
    sample_accuracy,
)
from fp8stream.harness.names import to_comfy  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="wall-time budget for training")
    ap.add_argument("--steps", type=int, default=None,
                    help="stop after this many steps instead (LR schedule over steps): bit-reproducible runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--family", choices=dit.FAMILIES, default="flux")
    ap.add_argument("--out", type=Path, default=None, help="default: tests/data/tiny_<family>/")
    args = ap.parse_args(argv)
    train(args)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    fam = dit.family(args.family)
    cfg = dict(fam.DEFAULT_CONFIG)
    tf = dit.TinyDiT(fam.make_model(cfg), ClassConditioning(*fam.cond_dims(cfg)), cfg, args.family)

    x_all, y_all = load_digits_tokens()
    # A fixed held-out slice for a repeatable loss (same noise and t every time).
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(x_all), generator=g)
    ev, tr = perm[:256], perm[256:]

    tf.model.eval()
    loss_init = dit.rf_loss(tf, x_all[ev], y_all[ev])
    print(f"eval loss at init: {loss_init:.4f}", flush=True)
    t0 = time.monotonic()
    step = _loop(tf, x_all[tr], y_all[tr], g, args)
    train_s = time.monotonic() - t0
    tf.model.eval()
    loss_final = dit.rf_loss(tf, x_all[ev], y_all[ev])
    print(f"trained {step} steps in {train_s:.0f}s; eval loss {loss_init:.4f} -> {loss_final:.4f}", flush=True)

    labels = torch.arange(100) % NUM_CLASSES
    acc = sample_accuracy(digit_classifier(), dit.sample(tf, 100, 20, seed=0, labels=labels), labels)
    print(f"class accuracy of 100 samples (20 Euler steps): {acc:.2f}", flush=True)
    training = {
        "data": "sklearn.datasets.load_digits, 8x8 in [-1,1], 2x2 patches -> 16 tokens x 4",
        "objective": "rectified flow, v = noise - x0, t ~ sigmoid(N(0,1))",
        "seed": args.seed, "batch": args.batch, "lr": args.lr, "threads": args.threads,
        "minutes": None if args.steps else args.minutes, "steps": step, "train_seconds": round(train_s, 1),
        "eval_loss_init": round(loss_init, 5), "eval_loss_final": round(loss_final, 5),
        "sample_class_accuracy_100x20steps": acc,
        "torch": torch.__version__,
    }
    _save(tf, args.out or dit.model_dir(args.family), training)


def _loop(tf: dit.TinyDiT, x_tr: torch.Tensor, y_tr: torch.Tensor, g: torch.Generator,
          args: argparse.Namespace) -> int:
    """AdamW on the rectified-flow loss until the budget; returns the number of steps."""
    params = list(tf.model.parameters()) + list(tf.cond.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    budget = args.minutes * 60.0
    t0 = time.monotonic()
    step, ema = 0, None
    tf.model.train()
    while True:
        elapsed = time.monotonic() - t0
        if (args.steps is None and elapsed >= budget) or (args.steps is not None and step >= args.steps):
            return step
        # Warm-up, then cosine decay over the budget (so the end is annealed). A wall-time
        # budget makes the step count depend on machine load; --steps does not.
        frac = elapsed / budget if args.steps is None else step / args.steps
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
        for gr in opt.param_groups:
            gr["lr"] = lr
        idx = torch.randint(len(x_tr), (args.batch,), generator=g)
        x0, y = x_tr[idx], y_tr[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.sigmoid(torch.randn(args.batch, generator=g))
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
        guid = 1.0 + 4.0 * torch.rand(args.batch, generator=g)  # drawn for every family: same stream
        loss = F.mse_loss(dit.velocity(tf, xt, t, y, guidance=guid), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        step += 1
        if step % 200 == 0:
            print(f"step {step} t={elapsed:.0f}s lr={lr:.2e} loss(ema)={ema:.4f}", flush=True)


def _save(tf: dit.TinyDiT, out: Path, training: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = f"tiny_{tf.family}.safetensors"
    sd = to_comfy(tf.fam, tf.model.state_dict(), tf.config)
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(out / weights))
    save_file({k: v.detach().float().contiguous() for k, v in tf.cond.state_dict().items()},
              str(out / "conditioning.safetensors"))
    for f in (weights, "conditioning.safetensors"):
        os.chmod(out / f, 0o644)
    meta = {"family": tf.family, "model": tf.config, "training": training}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
