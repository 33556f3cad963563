"""What the tiny DiTs (Flux, SD3, Wan families) share: the committed model folders, loading,
rectified-flow sampling and loss on digit tokens, the FP8 checkpoint under ComfyUI names, and
the FP8 end-to-end figure. A family is a module (``flux``, ``sd3``, ``wan``) with DEFAULT_CONFIG,
make_model, forward, linear_maps, other_maps and cond_dims; those ``rescale`` acts on (Flux, SD3)
also give modulations and attentions."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

from fp8stream.harness.checkpoint import FP8Layer, write_fp8_checkpoint
from fp8stream.harness.digits import NUM_CLASSES, ClassConditioning
from fp8stream.harness.fp8 import Scale, fp8_model, sqnr_db
from fp8stream.harness.names import from_comfy, linear_rows, split_fp8, to_comfy
from fp8stream.harness.record import LinearInputs, inputs_by_comfy_name, record_linear_inputs

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
FAMILIES = ("flux", "sd3", "wan")


def family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown harness family {name!r} (one of {', '.join(FAMILIES)})")
    return importlib.import_module(f"fp8stream.harness.{name}")


def model_dir(name: str) -> Path:
    return DATA_DIR / f"tiny_{name}"


@dataclass
class TinyDiT:
    """A trained tiny DiT (diffusers names in memory) with its conditioning, config and family."""

    model: nn.Module
    cond: ClassConditioning
    config: dict
    family: str = "flux"

    @property
    def fam(self) -> ModuleType:
        return family(self.family)


def load(directory: Path | str, weights: Path | str | None = None) -> TinyDiT:
    """Load a committed ComfyUI-named F32 file into its diffusers model (strict).

    ``weights`` overrides the weights file (e.g. a rescaled copy) keeping the directory's
    config and conditioning."""
    directory = Path(directory)
    meta = json.loads((directory / "config.json").read_text())
    name, cfg = meta.get("family", "flux"), meta["model"]
    fam = family(name)
    weights = weights or directory / f"tiny_{name}.safetensors"
    model = fam.make_model(cfg)
    with safe_open(str(weights), "pt") as f:
        comfy = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict(from_comfy(fam, comfy, cfg), strict=True)
    model.eval()
    cond = ClassConditioning(*fam.cond_dims(cfg))
    with safe_open(str(directory / "conditioning.safetensors"), "pt") as f:
        cond.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
    cond.eval()
    return TinyDiT(model, cond, cfg, name)


def velocity(tf: TinyDiT, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, **kw) -> torch.Tensor:
    return tf.fam.forward(tf.model, tf.cond, x, t, labels, **kw)


@torch.no_grad()
def sample(tf: TinyDiT, n: int = 16, steps: int = 20, seed: int = 0,
           labels: torch.Tensor | None = None) -> torch.Tensor:
    """Euler rectified-flow sampling from t=1 (noise) to t=0, every step through the model.

    Returns the final tokens [n, 16, 4] (``digits.unpack`` gives 8x8 images). Labels default
    to 0..9 repeated, so every class is sampled.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, 4, generator=g)
    if labels is None:
        labels = torch.arange(n) % NUM_CLASSES
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t = torch.full((n,), float(ts[i]))
        v = velocity(tf, x, t, labels)
        x = x + (ts[i + 1] - ts[i]) * v
    return x


def rf_loss(tf: TinyDiT, x0: torch.Tensor, labels: torch.Tensor, seed: int = 1234) -> float:
    """Rectified-flow MSE of velocity on fixed noise and times (a repeatable evaluation loss)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=g))
    xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
    with torch.no_grad():
        v = velocity(tf, xt, t, labels)
    return float(F.mse_loss(v, noise - x0))


def comfy_state(tf: TinyDiT) -> dict[str, torch.Tensor]:
    return to_comfy(tf.fam, tf.model.state_dict(), tf.config)


def write_fp8(tf: TinyDiT, path: Path | str, layers: list[str] | None = None) -> list[str]:
    """The DiT as a ComfyUI FP8 checkpoint under ComfyUI's names; returns the FP8 layers
    (default: every linear)."""
    layers = layers if layers is not None else [lm.comfy for lm in tf.fam.linear_maps(tf.config)]
    write_fp8_checkpoint(comfy_state(tf), layers, path)
    return layers


def record_by_comfy_name(tf: TinyDiT, run_fn) -> LinearInputs:
    return inputs_by_comfy_name(record_linear_inputs(tf.model, run_fn), tf.fam.linear_maps(tf.config))


def fp8_weights(tf: TinyDiT, layers: Mapping[str, FP8Layer]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ComfyUI FP8 layers -> diffusers module name -> (rows of the fused FP8 weight, weight_scale)."""
    rows = linear_rows(tf.fam.make_model, tf.config)
    out = {}
    for lm in tf.fam.linear_maps(tf.config):
        if lm.comfy in layers:
            L = layers[lm.comfy]
            out.update({p: (w, L.weight_scale) for p, w in split_fp8(L.weight, lm, rows).items()})
    return out


def module_scales(tf: TinyDiT, scales: Mapping[str, Scale | None]) -> dict[str, Scale | None]:
    """Per-ComfyUI-layer scales -> per-diffusers-module scales (fused parts share their layer's)."""
    return {p: scales.get(lm.comfy) for lm in tf.fam.linear_maps(tf.config) for p in lm.parts}


def end_to_end(tf: TinyDiT, layers: Mapping[str, FP8Layer], scales: Mapping[str, Scale | None],
               n: int = 16, steps: int = 20, seed: int = 0, ref: torch.Tensor | None = None,
               weights: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> float:
    """SQNR (dB) of the FP8 model's generated samples against full precision, same noise and
    labels. ``scales`` is keyed by ComfyUI layer name (None: weight-only). ``ref`` (the
    full-precision samples of the same run) and ``weights`` (``fp8_weights``) spare recomputing
    them when one run judges several sources."""
    ref = sample(tf, n, steps, seed) if ref is None else ref
    weights = fp8_weights(tf, layers) if weights is None else weights
    with fp8_model(tf.model, weights, module_scales(tf, scales)):
        out = sample(tf, n, steps, seed)
    return sqnr_db(ref, out)


def fp8_sample(tf: TinyDiT, layers: Mapping[str, FP8Layer], scales: Mapping[str, Scale | None],
               n: int, steps: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Samples with FP8 linears at ``scales`` (the demo's rows)."""
    with fp8_model(tf.model, fp8_weights(tf, layers), module_scales(tf, scales)):
        return sample(tf, n, steps, seed, labels)
