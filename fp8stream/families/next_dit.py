"""One Next-DiT block's tensors (Lumina 2 and Z-Image share the block), for their real-size inventories."""

from __future__ import annotations

from fp8stream.families.spec import TensorSpec, linear, norms


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
