"""Seeded synthetic samples: one CPU generator per layer, so CPU and CUDA runs draw the same inputs."""

from __future__ import annotations

import zlib

import torch

from fp8stream.names.prefixes import bare_name


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from the run's seed and the layer's bare name (model prefix
    removed): order-independent, and a prefixed checkpoint gets the same scales as a bare one."""
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + zlib.crc32(bare_name(name).encode("utf-8"))) % (2**63))
    return g
