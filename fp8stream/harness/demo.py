"""The README's first command (``bash scripts/demo.sh``): why the tool exists, in one picture.

The tiny Flux DiT of the harness (trained on 8x8 digits), made to carry activations in the
thousands the way full-size DiTs do by a function-preserving rescaling (``rescale``: AdaLN
modulation x1000, the weights that read it /1000: the same model, samples unchanged), is
written as a ComfyUI FP8 checkpoint with the placeholder ``input_scale = 1.0`` that shipped FP8
files carry, calibrated with the CLI, and sampled three ways: full precision, FP8 at the
placeholder 1.0, and FP8 at fp8stream's scales. One PNG, a row each, with each row's SQNR
against full precision; the path is printed.

Usage: python -m fp8stream.harness.demo [OUT_DIR]   (default demo-out/)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from fp8stream.harness import dit, rescale
from fp8stream.harness.checkpoint import read_fp8_layers, write_fp8_checkpoint
from fp8stream.harness.digits import unpack
from fp8stream.harness.fp8 import sqnr_db

K = 1000.0  # the rescaling: modulated inputs up to ~10^4, as in full-size Flux
SAMPLES, STEPS, SEED = 10, 20, 0
# Torch threads for the sampling and the calibration's forward pass: fixed, not the machine's
# core count, so that float sums run in the same order everywhere and the figures repeat.
THREADS = 2


def build(out: Path) -> tuple[dit.TinyDiT, Path, Path]:
    """The rescaled tiny Flux, its FP8 file with placeholder scales, and the calibrated file."""
    tf = rescale.variant(dit.load(dit.model_dir("flux")), f"k{K:g}")
    fp8 = out / "tiny-flux-fp8.safetensors"
    layers = [lm.comfy for lm in tf.fam.linear_maps(tf.config)]
    write_fp8_checkpoint(dit.comfy_state(tf), layers, fp8, input_scales={n: 1.0 for n in layers})
    calibrated = out / "tiny-flux-fp8-calibrated.safetensors"
    cmd = [sys.executable, "-m", "fp8stream", "calibrate", "--force", "--seed", str(SEED),
           "--forward-threads", str(THREADS), str(fp8), str(calibrated)]
    print("$ fp8stream calibrate", *cmd[4:], flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(dit.REPO_ROOT)))
    return tf, fp8, calibrated


def rows(tf: dit.TinyDiT, fp8: Path, calibrated: Path) -> list[tuple[str, torch.Tensor]]:
    """(title, samples) for full precision, FP8 at the file's 1.0, FP8 at fp8stream's scales."""
    labels = torch.arange(SAMPLES) % 10
    ref = dit.sample(tf, SAMPLES, STEPS, SEED, labels)
    out = [("full precision (F32)", ref)]
    for title, path in (("FP8, input_scale 1.0 (as shipped)", fp8), ("FP8, fp8stream's input_scale", calibrated)):
        layers = read_fp8_layers(path)
        x = dit.fp8_sample(tf, layers, {n: L.input_scale for n, L in layers.items()}, SAMPLES, STEPS, SEED, labels)
        out.append((f"{title}: SQNR {round(sqnr_db(ref, x), 1) + 0.0:.1f} dB vs full precision", x))
    return out


def save_png(rows_: list[tuple[str, torch.Tensor]], path: Path, cell: int = 32, title_h: int = 16) -> Path:
    """Rows of 8x8 digits (nearest-neighbour upscaled), each under its title."""
    from PIL import Image, ImageDraw

    n = rows_[0][1].shape[0]
    img = Image.new("L", (n * cell + 8, len(rows_) * (cell + title_h) + 4), 255)
    draw = ImageDraw.Draw(img)
    for r, (title, tokens) in enumerate(rows_):
        y = r * (cell + title_h)
        draw.text((4, y + 2), title, fill=0)
        pix = ((unpack(tokens).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        for i in range(n):
            digit = Image.fromarray(255 - pix[i].numpy(), "L").resize((cell, cell), Image.NEAREST)
            img.paste(digit, (4 + i * cell, y + title_h))
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    out = Path((argv if argv is not None else sys.argv[1:])[0] if (argv or sys.argv[1:]) else "demo-out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    tf, fp8, calibrated = build(out)
    result = rows(tf, fp8, calibrated)
    for title, _ in result:
        print(title)
    print(f"(seed {SEED}, {THREADS} threads, torch {torch.__version__}: every run of this code gives these figures; "
          "another torch, or a change of the method, may move them)")
    print(save_png(result, out / "digits.png").resolve())


if __name__ == "__main__":
    main()
