"""One tensor of a real-size inventory (a family's `inventories`, built into a checkpoint by
fp8stream.synthetic.checkpoint.from_inventory): its name, shape and whether it is an FP8 linear weight."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    fp8: bool  # an FP8 linear weight (gets weight_scale + comfy_quant), else a BF16 tensor


def linear(name: str, out_f: int, in_f: int, fp8: bool, bias: bool = True) -> list[TensorSpec]:
    specs = [TensorSpec(f"{name}.weight", (out_f, in_f), fp8)]
    if bias:
        specs.append(TensorSpec(f"{name}.bias", (out_f,), False))
    return specs


def norms(*names: str, width: int) -> list[TensorSpec]:
    """RMSNorm-style weights (BF16), one per name."""
    return [TensorSpec(n, (width,), False) for n in names]
