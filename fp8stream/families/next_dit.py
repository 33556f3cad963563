"""What Lumina 2 and Z-Image share (both are Next-DiTs): the block's tensors and the layout around
it for their real-size inventories, their presets, and where their attention mixes values."""

from __future__ import annotations

from typing import Callable

from fp8stream.families.dit_parts import self_value_sources
from fp8stream.families.spec import TensorSpec, linear, norms

PRESETS = (
    ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
    ("final_layer.*", "final projection"),
)


def next_dit_block(p: str, d: int, qkv_rows: int, ffn: int, head: int, modulation: tuple[int, ...] | None,
                   mod_name: str = "adaLN_modulation.1") -> list[TensorSpec]:
    """One Next-DiT block (Lumina 2, Z-Image): fused qkv, out, q/k norms, gated FFN w1-w3, four
    RMSNorms, and for modulated blocks the AdaLN linear (`modulation`: its out, in widths)."""
    specs = linear(f"{p}.attention.qkv", qkv_rows, d, True, bias=False)
    specs += linear(f"{p}.attention.out", d, d, True, bias=False)
    specs += norms(f"{p}.attention.q_norm.weight", f"{p}.attention.k_norm.weight", width=head)
    for w, shape in (("w1", (ffn, d)), ("w2", (d, ffn)), ("w3", (ffn, d))):
        specs += linear(f"{p}.feed_forward.{w}", *shape, True, bias=False)
    specs += norms(*(f"{p}.{n}.weight" for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2")),
                   width=d)
    return specs + (linear(f"{p}.{mod_name}", *modulation, True) if modulation else [])


def next_dit_inventory(d: int, layers: int, caption: int, time: int,
                       block: Callable[[str, int, bool], list[TensorSpec]]) -> list[TensorSpec]:
    """A Next-DiT at real size: embedders (caption states `caption` wide, time embedding `time`
    wide), 2 noise and 2 context refiner blocks, `layers` main blocks, final layer;
    `block(prefix, d, modulated)` gives one block's tensors."""
    specs = linear("x_embedder", d, 64, False) + linear("t_embedder.mlp.0", 1024, 256, False)
    specs += linear("t_embedder.mlp.2", time, 1024, False)
    specs += norms("cap_embedder.0.weight", width=caption) + linear("cap_embedder.1", d, caption, False)
    for i in range(2):
        specs += block(f"noise_refiner.{i}", d, True) + block(f"context_refiner.{i}", d, False)
    for i in range(layers):
        specs += block(f"layers.{i}", d, True)
    return specs + linear("final_layer.adaLN_modulation.1", d, time, False) + linear("final_layer.linear", 64, d, False)


def next_dit_value_sources(layers: int, refiner_layers: int, attention: str) -> dict[str, list[list[str]]]:
    """Each block's attention output projection reads the mix of its own values (`attention`: the
    attention module's name in diffusers' model, which differs between the two)."""
    blocks = [f"layers.{i}." for i in range(layers)]
    blocks += [f"{part}.{i}." for part in ("noise_refiner", "context_refiner") for i in range(refiner_layers)]
    return self_value_sources(f"{b}{attention}." for b in blocks)
