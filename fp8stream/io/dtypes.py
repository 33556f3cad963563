"""safetensors dtype names and their sizes in bits (sub-byte float formats included)."""

from __future__ import annotations

import math
import struct

# Every dtype name safetensors 0.8 knows; sizes in bits because F4 and F6 pack below a byte.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes a tensor of this dtype and shape occupies, or None if the bits do not fill whole bytes."""
    numel = 1
    for dim in shape:
        numel *= dim
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8:
        return None
    return bits // 8


def torch_dtype(dtype: str):  # -> torch.dtype | None
    """The torch dtype for a safetensors name, or None when torch has no such type."""
    import torch

    table = {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "F8_E5M2": torch.float8_e5m2,
        "F8_E4M3": torch.float8_e4m3fn,
        "I16": torch.int16,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I32": torch.int32,
        "F32": torch.float32,
        "F64": torch.float64,
        "I64": torch.int64,
    }
    return table.get(dtype)


_NUMPY_TYPES = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "F16": "<f2", "I32": "<i4", "F32": "<f4",
                "F64": "<f8", "I64": "<i8"}


def decode_array(raw: bytes | bytearray | memoryview, dtype: str):  # -> numpy float32 array | None
    """A tensor's bytes as float32 values, by numpy (no torch: the stream starts before torch has
    loaded); the same values torch's `.float()` gives. None for a dtype numpy cannot read (FP8)."""
    import numpy as np

    if dtype == "BF16":  # the top half of a float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    code = _NUMPY_TYPES.get(dtype)
    return None if code is None else np.frombuffer(raw, dtype=code).astype(np.float32)


def decode_floats(raw: bytes | bytearray | memoryview, dtype: str):  # -> numpy float32 array
    """A small tensor's bytes as float32 (new memory): numpy where it reads the dtype, else
    torch's cast (FP8); ValueError for a dtype neither knows."""
    values = decode_array(raw, dtype)
    if values is None:
        import torch

        tdt = torch_dtype(dtype)
        if tdt is None:
            raise ValueError(f"cannot decode {dtype}")
        decoded = torch.frombuffer(bytearray(raw), dtype=tdt) if len(raw) else torch.zeros(0, dtype=tdt)
        values = decoded.float().numpy()
    return values


_STRUCT = {"F32": ("f", 4), "F16": ("e", 2)}  # the scales' usual dtypes, read without numpy (inspect)


def decode_values(raw: bytes | bytearray | memoryview | None, dtype: str) -> list[float]:
    """Values of a small float tensor as Python floats (used for scales, never for weights): the
    float32 values decode_floats gives; F32, F16 and BF16 by struct, so `inspect` needs no numpy."""
    if not raw:
        raise ValueError(f"cannot decode {dtype}")
    raw = bytes(raw)
    if dtype == "BF16" and len(raw) % 2 == 0:  # float32's upper half
        return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    if dtype in _STRUCT and len(raw) % _STRUCT[dtype][1] == 0:
        code, size = _STRUCT[dtype]
        return list(struct.unpack(f"<{len(raw) // size}{code}", raw))
    return [float(v) for v in decode_floats(raw, dtype).tolist()]


def f32_bytes(value: float) -> bytes:
    return struct.pack("<f", value)


def as_f32(value: float) -> float:
    """The value rounded to float32, as it will be stored (±inf beyond float32's range)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
