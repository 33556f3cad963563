"""FP8 E4M3 maths of the harness: quantize, ComfyUI's FP8 linear (comfy-kitchen), SQNR, and a
whole model run with FP8 linears at given per-layer input scales (or "dynamic": amax/448 per
call). Background: docs/ (FP8 scales)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_MAX = 448.0

Scale = float | torch.Tensor | str  # a static scale, or "dynamic"


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor FP8 E4M3 weight: (round(W / s) as float8_e4m3fn, s = amax/448 as F32 scalar [])."""
    w = w.float()
    s = (w.abs().max() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny).reshape(())
    return (w / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), s.float()


def dequantize_weight(w8: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    return w8.float() * ws.float()


def _ck():
    import comfy_kitchen  # noqa: F401  (registers the ops; needs `packaging`)
    from comfy_kitchen.tensor import QuantizedTensor, TensorCoreFP8Layout

    return QuantizedTensor, TensorCoreFP8Layout


def fp8_linear(x: torch.Tensor, w8: torch.Tensor, ws: torch.Tensor, input_scale: Scale,
               bias: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's FP8 linear: comfy-kitchen static quantization of x (x/s, clamp ±448, e4m3fn),
    then ``_scaled_mm`` with scale_a = s, scale_b = weight_scale, plus bias. "dynamic" uses
    s = amax(x)/448 of this call."""
    QT, Layout = _ck()
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()
    s = resolve_scale(x2, input_scale)
    xq, params = Layout.quantize(x2, scale=s)
    X = QT(xq, "TensorCoreFP8Layout", params)
    W = QT(w8, "TensorCoreFP8Layout", Layout.Params(scale=ws.float().reshape(()), orig_dtype=torch.float32,
                                                   orig_shape=tuple(w8.shape)))
    y = F.linear(X, W, None if bias is None else bias.float())
    return y.reshape(*shape[:-1], w8.shape[0])


def resolve_scale(x2: torch.Tensor, input_scale: Scale) -> torch.Tensor:
    if isinstance(input_scale, str):
        if input_scale != "dynamic":
            raise ValueError(f"unknown scale {input_scale!r}")
        return (x2.abs().max() / FP8_MAX).clamp(min=1e-12).float().reshape(())
    return torch.as_tensor(input_scale, dtype=torch.float32).reshape(())


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """10·log10(‖ref‖² / ‖ref − test‖²); inf when identical."""
    ref, test = ref.detach().double(), test.detach().double()
    err = float((ref - test).pow(2).sum())
    sig = float(ref.pow(2).sum())
    return math.inf if err == 0 else 10.0 * math.log10(max(sig, 1e-300) / err)


def fp8_linear_quality(x: torch.Tensor | list[torch.Tensor], weight_fp8: torch.Tensor,
                       weight_scale: torch.Tensor, input_scale: Scale,
                       bias: torch.Tensor | None = None) -> dict[str, float]:
    """One FP8 linear on its real inputs vs full precision (dequantized weight, unquantized input).

    ``x`` is the recorded input, one tensor or a list of per-call tensors (needed for
    "dynamic", whose scale follows each call). Returns ``clipped`` (fraction of |x| > 448·s),
    ``sqnr_db`` of the output, and ``scale_ratio`` = s / (amax(x)/448) (for "dynamic": the
    mean over calls of the call's scale over the global amax scale).
    """
    calls = x if isinstance(x, list) else [x]
    calls = [c.reshape(-1, c.shape[-1]).float() for c in calls]
    w = dequantize_weight(weight_fp8, weight_scale)
    ref = torch.cat([F.linear(c, w, bias) for c in calls])
    out = torch.cat([fp8_linear(c, weight_fp8, weight_scale, input_scale, bias) for c in calls])
    amax = max(float(c.abs().max()) for c in calls)
    amax_scale = max(amax / FP8_MAX, 1e-30)
    clipped, total, ratios = 0, 0, []
    for c in calls:
        s = float(resolve_scale(c, input_scale))
        # The relative slack (far below e4m3's 2^-3 step) keeps float rounding of s = amax/448
        # from counting the maximum itself as clipped (e.g. the exact 1.0 of a cos(0) channel).
        clipped += int((c.abs() > FP8_MAX * s * (1 + 1e-6)).sum())
        total += c.numel()
        ratios.append(s / amax_scale)
    return {"clipped": clipped / max(total, 1), "sqnr_db": sqnr_db(ref, out),
            "scale_ratio": sum(ratios) / len(ratios)}


@contextlib.contextmanager
def fp8_model(model: nn.Module, weights: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
              scales: Mapping[str, Scale | None]) -> Iterator[nn.Module]:
    """Run ``model`` with FP8 linears: module name -> (weight_fp8, weight_scale) and -> scale.

    A module in ``weights`` with scale None runs weight-only (dequantized weight, full-precision
    input: ComfyUI's ``full_precision_matrix_mult``); a module missing from ``weights`` keeps
    its own weights. The original forwards are restored on exit.
    """
    patched = []
    mods = dict(model.named_modules())
    for name, (w8, ws) in weights.items():
        mod = mods[name]
        s = scales.get(name)
        if s is None:
            w = dequantize_weight(w8, ws)
            def fwd(x, _w=w, _m=mod):
                return F.linear(x, _w, _m.bias)
        else:
            def fwd(x, _w8=w8, _ws=ws, _s=s, _m=mod):
                return fp8_linear(x, _w8, _ws, _s, _m.bias).to(x.dtype)
        # Remember an instance-level forward (hooks some libraries install) to put it back.
        patched.append((mod, mod.__dict__.get("forward")))
        mod.forward = fwd
    try:
        yield model
    finally:
        for mod, own in patched:
            if own is None:
                del mod.forward  # back to the class's forward
            else:
                mod.forward = own


@contextlib.contextmanager
def pinned(threads: int = 1) -> Iterator[None]:
    """Torch threads (intra- and inter-op) and deterministic algorithms for the harness's maths,
    restored on exit: a reduction split over another number of threads adds in another order,
    and a verdict must not depend on the machine's core count. numpy's BLAS and OpenMP pools
    (scikit-learn's digit classifier) get the same limit."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn, which the harness needs

    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # settable once per process, before any inter-op work
        torch.set_num_interop_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)
