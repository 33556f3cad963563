"""Row norms of a producer weight that streams past as bytes (rows may straddle chunks)."""

from __future__ import annotations

import numpy as np
import torch

from fp8stream.calibration.fp8 import row_sum_squares
from fp8stream.io.dtypes import torch_dtype


class RowSums:
    """Row sums of squares of a BF16/F16/F32 2-D weight from byte chunks (rows may straddle chunks)."""

    def __init__(self, dtype: str, shape: tuple[int, ...], hold: bool):
        self.fp8 = dtype == "F8_E4M3"
        self.tdt = torch.uint8 if self.fp8 else torch_dtype(dtype)
        self.cols = shape[1]
        self.row_bytes = self.cols * torch.tensor([], dtype=self.tdt).element_size()
        self.carry = b""
        self.sums: list[np.ndarray] = []
        self.hold = hold
        self.held: list[torch.Tensor] = []

    def feed(self, chunk: bytes) -> None:
        if not self.carry and len(chunk) % self.row_bytes == 0 and not isinstance(chunk, bytes):
            buf, whole = chunk, len(chunk)  # the stream hands whole writable rows: no copy
        else:
            buf = bytearray(self.carry) + chunk
            whole = len(buf) // self.row_bytes * self.row_bytes
            self.carry = bytes(buf[whole:])
        if whole:
            raw = torch.frombuffer(buf, dtype=self.tdt, count=whole // self.tdt.itemsize).view(-1, self.cols)
            if self.fp8:  # an FP8 producer that is not calibrated itself (excluded, --include)
                self.sums.append(row_sum_squares(raw.numpy()))
                if self.hold:
                    self.held.append(raw.clone())  # raw bytes: decoded only when used
                return
            # norms accumulated in float32 (relative error ~1e-6 here), 3.6x faster than float64 sums
            norms = torch.linalg.vector_norm(raw, dim=1, dtype=torch.float32).double()
            self.sums.append(norms.square_().numpy())
            if self.hold:
                self.held.append(raw.clone())  # native dtype: half the memory of F32

