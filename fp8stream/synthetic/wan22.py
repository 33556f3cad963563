"""Wan 2.2 inventories at real size (ComfyUI names), for scripts/bench.py --arch.

The two A14B experts (high noise, low noise) are Wan 2.1-14B's layout each; i2v's experts read
36 latent channels (16 + 4 mask + 16 image latent) and have no CLIP image branch. TI2V-5B:
dim 3072, FFN 14336, 30 blocks, 48 latent channels (Wan 2.2's VAE).
"""

from __future__ import annotations

from fp8stream.synthetic.inventories import TensorSpec, wan_dit


def ti2v_5b(blocks: int | None = None) -> list[TensorSpec]:
    return wan_dit(3072, 14336, 30 if blocks is None else blocks, in_channels=48, out_channels=48)


def i2v_a14b(blocks: int | None = None) -> list[TensorSpec]:
    """One expert of Wan 2.2 I2V-A14B (the other has the same layout)."""
    return wan_dit(5120, 13824, 40 if blocks is None else blocks, in_channels=36, out_channels=16)
