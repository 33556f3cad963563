"""Lumina-Image 2.0 at real size (original / ComfyUI names): dim 2304, 24 query heads of 96
and 8 key/value heads (fused qkv of 3840 rows), 26 layers plus 2 noise and 2 context refiner
blocks, gated FFN 9216, Gemma-2 caption states of 2304, 2x2 patches of 16 channels (2.6B
parameters). Block linears in FP8."""

from __future__ import annotations

from fp8stream.synthetic.spec import TensorSpec, linear, norms


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


def _block(p: str, d: int, modulated: bool) -> list[TensorSpec]:
    return next_dit_block(p, d, d + 2 * 768, 9216, 96, (4 * d, 1024) if modulated else None)


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d = 2304
    n = 26 if blocks is None else blocks
    specs = linear("x_embedder", d, 64, False) + linear("t_embedder.mlp.0", 1024, 256, False)
    specs += linear("t_embedder.mlp.2", 1024, 1024, False)
    specs += norms("cap_embedder.0.weight", width=2304) + linear("cap_embedder.1", d, 2304, False)
    for i in range(2):
        specs += _block(f"noise_refiner.{i}", d, True) + _block(f"context_refiner.{i}", d, False)
    for i in range(n):
        specs += _block(f"layers.{i}", d, True)
    return specs + linear("final_layer.adaLN_modulation.1", d, 1024, False) + linear("final_layer.linear", 64, d, False)
