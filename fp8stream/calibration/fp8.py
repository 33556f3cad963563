"""float8_e4m3fn facts and fast decoding of raw FP8 bytes."""

from __future__ import annotations

import math
import struct

import torch

E4M3_MAX = 448.0


def byte_values(device: torch.device | str = "cpu") -> torch.Tensor:
    """The float32 value of each of the 256 FP8 bytes (NaN for 0x7f and 0xff)."""
    return torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().to(device)


def dequantize_rows(rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Raw FP8 bytes (uint8, any device) to values with a unit weight scale."""
    return rows.view(torch.float8_e4m3fn).to(dtype)


def f32_bytes(value: float) -> bytes:
    return struct.pack("<f", value)


def as_f32(value: float) -> float:
    """The value rounded to float32, as it will be stored (±inf beyond float32's range)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
