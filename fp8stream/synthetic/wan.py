"""Wan 2.x inventories at real size (ComfyUI names), for scripts/bench.py --arch.

Wan 2.1-14B and each of Wan 2.2's A14B experts (high noise, low noise) share one layout; i2v's
experts read 36 latent channels (16 + 4 mask + 16 image latent) and have no CLIP image branch.
TI2V-5B: dim 3072, FFN 14336, 30 blocks, 48 latent channels (Wan 2.2's VAE).
"""

from __future__ import annotations

from fp8stream.synthetic.spec import TensorSpec, linear as _linear


def wan_14b(blocks: int | None = None) -> list[TensorSpec]:
    """Wan2.1-14B-class video DiT: dim 5120, FFN 13824, 40 blocks (14B parameters)."""
    return wan_dit(5120, 13824, 40 if blocks is None else blocks)


def wan_dit(d: int, ffn: int, n: int, in_channels: int = 16, out_channels: int = 16) -> list[TensorSpec]:
    """A Wan 2.x DiT (T2V layout, heads 128 wide) of width d, FFN width ffn and n blocks."""
    specs: list[TensorSpec] = [TensorSpec("patch_embedding.weight", (d, in_channels, 1, 2, 2), False),
                               TensorSpec("patch_embedding.bias", (d,), False)]
    specs += _linear("text_embedding.0", d, 4096, False) + _linear("text_embedding.2", d, d, False)
    specs += _linear("time_embedding.0", d, 256, False) + _linear("time_embedding.2", d, d, False)
    specs += _linear("time_projection.1", 6 * d, d, False)
    for i in range(n):
        p = f"blocks.{i}"
        specs.append(TensorSpec(f"{p}.modulation", (1, 6, d), False))
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                specs += _linear(f"{p}.{attn}.{proj}", d, d, True)
            specs += [TensorSpec(f"{p}.{attn}.norm_q.weight", (d,), False),
                      TensorSpec(f"{p}.{attn}.norm_k.weight", (d,), False)]
        specs += [TensorSpec(f"{p}.norm3.weight", (d,), False), TensorSpec(f"{p}.norm3.bias", (d,), False)]
        specs += _linear(f"{p}.ffn.0", ffn, d, True) + _linear(f"{p}.ffn.2", d, ffn, True)
    specs += [TensorSpec("head.modulation", (1, 2, d), False)] + _linear("head.head", 4 * out_channels, d, False)
    return specs


def ti2v_5b(blocks: int | None = None) -> list[TensorSpec]:
    """Wan 2.2 TI2V-5B."""
    return wan_dit(3072, 14336, 30 if blocks is None else blocks, in_channels=48, out_channels=48)


def i2v_a14b(blocks: int | None = None) -> list[TensorSpec]:
    """One expert of Wan 2.2 I2V-A14B (the other has the same layout)."""
    return wan_dit(5120, 13824, 40 if blocks is None else blocks, in_channels=36, out_channels=16)
