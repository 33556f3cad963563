"""The FP8 row-norm primitives: the CPU lookup table and the torch (CUDA) path give the same sums."""

from __future__ import annotations

import numpy as np
import torch

from fp8stream.calibration.fp8 import row_sum_squares, row_sum_squares_torch


def reference(raw: np.ndarray) -> np.ndarray:
    w = torch.from_numpy(raw).view(torch.float8_e4m3fn).double()
    return torch.nan_to_num(w, nan=0.0).pow(2).sum(1).numpy()


def test_lookup_table_and_torch_path_agree_with_plain_decoding() -> None:
    rng = np.random.default_rng(0)
    for width in (64, 63, 3072):  # even (byte pairs), odd (single bytes), a real width
        raw = rng.integers(0, 256, size=(37, width), dtype=np.uint8)  # NaN bytes included
        expected = reference(raw)
        np.testing.assert_allclose(row_sum_squares(raw), expected, rtol=1e-6)
        got = row_sum_squares_torch(torch.from_numpy(raw)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)
