"""Row norms of a producer weight that streams past as bytes (rows may straddle chunks), and the
decoding of held rows to float32. numpy only: FP8 rows by a table lookup (scales/fp8_maths.py),
BF16 exactly (the top half of a float32), F16 and F32 by numpy's casts (io/dtypes.py).
"""

from __future__ import annotations

import numpy as np

from fp8stream.io.dtypes import DTYPE_BITS, decode_array
from fp8stream.scales.fp8_maths import decode_fp8, row_sum_squares

FP8 = "F8_E4M3"


class RowSums:
    """Row sums of squares of a 2-D weight from byte chunks; `hold` keeps its rows' bytes."""

    def __init__(self, dtype: str, shape: tuple[int, ...], hold: bool):
        self.dtype = dtype
        self.fp8 = dtype == FP8
        self.cols = shape[1]
        self.row_bytes = self.cols * DTYPE_BITS[dtype] // 8
        self.carry = b""
        self.sums: list[np.ndarray] = []
        self.hold = hold
        self.held: list[np.ndarray] = []  # uint8 [rows, row_bytes], in the blocks they came in

    def feed(self, chunk: bytes) -> None:
        if not self.carry and len(chunk) % self.row_bytes == 0 and not isinstance(chunk, bytes):
            buf, whole = chunk, len(chunk)  # the stream hands whole writable rows: no copy
        else:
            buf = bytearray(self.carry) + chunk
            whole = len(buf) // self.row_bytes * self.row_bytes
            self.carry = bytes(buf[whole:])
        if not whole:
            return
        raw = np.frombuffer(buf, dtype=np.uint8, count=whole).reshape(-1, self.row_bytes)
        if self.hold:
            self.held.append(raw.copy())  # raw bytes: decoded only when used (half the memory of F32)
        if self.fp8:  # an FP8 producer that is not calibrated itself (excluded, --include)
            self.sums.append(row_sum_squares(raw))
        else:
            self.sums.append(norms_squared(raw, self.dtype))

    def result(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(row sums of squares in blocks, the held rows: raw bytes of the file dtype, uint8 [r, row_bytes])."""
        return self.sums, self.held


def decode_rows(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Rows of raw bytes (uint8 [r, row_bytes], C-contiguous) as float32 values [r, cols] (new memory)."""
    if dtype == FP8:
        return decode_fp8(raw)
    values = decode_array(raw, dtype)
    if values is None:
        raise ValueError(f"cannot decode {dtype} rows")
    return values.reshape(raw.shape[0], -1)


def norms_squared(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Σ_j w_ij² of each row of BF16/F16/F32 bytes (uint8 [r, row_bytes]), as float64.

    The squares of BF16 and F16 values are exact in float32 (8 and 11 mantissa bits) and summed
    in float64: the exact sums but for the last rounding, at about the speed of float32 sums."""
    rows = decode_rows(raw, dtype)
    np.square(rows, out=rows)
    return rows.sum(axis=1, dtype=np.float64)


def in_row_order(row_starts: dict[str, list[int]], name: str, parts: list) -> list:
    """A layer's blocks sorted by their first row: observe_weight may see them in any order (the
    copy takes them from the forward pass's reads). Blocks of RowSums come in row order."""
    starts = row_starts.get(name)
    if starts is None or len(starts) != len(parts):
        return parts
    return [part for _, part in sorted(zip(starts, parts, strict=True), key=lambda sp: sp[0])]
