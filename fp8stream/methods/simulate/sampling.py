"""Seeded synthetic samples: one CPU generator per layer, so CPU and CUDA runs draw the same inputs;
and torch's seeded normal draws made by numpy, for the bound's tail (which imports no torch)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from fp8stream.names.prefixes import bare_name

_MT_N = 624
_UNIFORM_BITS = 24  # a float32 uniform takes the low 24 bits of one 32-bit draw
_TWO_PI = np.float32(2.0 * math.pi)


def layer_generator(seed: int, name: str):  # -> torch.Generator
    """A CPU generator seeded from the run's seed and the layer's bare name (model prefix
    removed): order-independent, and a prefixed checkpoint gets the same scales as a bare one."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + zlib.crc32(bare_name(name).encode("utf-8"))) % (2**63))
    return g


class SeededNormal:
    """The float32 samples `torch.randn(..., generator=torch.Generator().manual_seed(seed))` draws
    (sizes of 16 and more), made by numpy: torch's Mersenne Twister (seeded as its manual_seed
    does) gives the same 32-bit draws as numpy's MT19937 given the same state, and torch's CPU
    kernel turns them into normals by Box-Muller on blocks of 16. The logarithm and sines are
    taken in float64 here, so a sample may differ from torch's in its last bit (torch's own
    vectorised and scalar kernels differ so too); earlier runs drew these samples with torch."""

    def __init__(self, seed: int) -> None:
        self.bits = np.random.MT19937()
        self.bits.state = {"bit_generator": "MT19937", "state": {"key": _mt_key(seed & 0xFFFFFFFF), "pos": _MT_N}}

    def randn(self, *shape: int) -> np.ndarray:
        n = math.prod(shape)
        if n < 16:
            raise ValueError("torch draws fewer than 16 normals another way")
        out = np.empty(n, dtype=np.float32)
        whole = n // 16 * 16
        out[:whole] = _box_muller(self._uniforms(n)[:whole])
        if n % 16:  # torch draws 16 more uniforms and rewrites the last 16 samples from them
            out[n - 16:] = _box_muller(self._uniforms(16))
        return out.reshape(shape)

    def _uniforms(self, n: int) -> np.ndarray:
        draws = self.bits.random_raw(n) & ((1 << _UNIFORM_BITS) - 1)
        return draws.astype(np.float32) * np.float32(2.0 ** -_UNIFORM_BITS)  # exact: 24 bits


def _box_muller(u: np.ndarray) -> np.ndarray:
    """Blocks of 16 uniforms -> 16 normals: the first 8 give the radius, the last 8 the angle."""
    blocks = u.reshape(-1, 2, 8)
    radius = np.sqrt(-2.0 * np.log((np.float32(1) - blocks[:, 0]).astype(np.float64)))
    theta = (_TWO_PI * blocks[:, 1]).astype(np.float64)  # rounded to float32 first, as torch does
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1).astype(np.float32).reshape(-1)


def _mt_key(seed: int) -> np.ndarray:
    """The Mersenne Twister's state after seeding with a 32-bit seed (init_genrand)."""
    key = np.empty(_MT_N, dtype=np.uint32)
    key[0] = x = seed
    for i in range(1, _MT_N):
        x = (1812433253 * (x ^ (x >> 30)) + i) & 0xFFFFFFFF
        key[i] = x
    return key
