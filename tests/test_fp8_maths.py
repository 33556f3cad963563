"""The FP8 row-norm primitives: the CPU lookup table and the torch (CUDA) path give the same sums."""

from __future__ import annotations

import numpy as np
import torch

from fp8stream.io.dtypes import decode_array, decode_floats, torch_dtype
from fp8stream.scales.fp8_maths import dequantize_rows, fp8_table, row_sum_squares, row_sum_squares_torch, set_threads


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


def test_the_table_is_torchs_float8_cast_bit_for_bit() -> None:
    """The numpy table decodes every byte as torch's float8_e4m3fn cast does (NaN's bits too):
    the CPU paths read weights without torch and must give the values ComfyUI computes with."""
    expected = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    assert fp8_table().tobytes() == expected.tobytes()
    raw = np.random.default_rng(1).integers(0, 256, size=(5, 7), dtype=np.uint8)
    assert dequantize_rows(torch.from_numpy(raw)).numpy().tobytes() == \
        torch.from_numpy(raw).view(torch.float8_e4m3fn).float().numpy().tobytes()


def test_row_sums_are_the_same_whatever_the_thread_count() -> None:
    """Large blocks are split over threads by whole rows: the sums do not depend on how many."""
    raw = np.random.default_rng(2).integers(0, 256, size=(1531, 3072), dtype=np.uint8)  # 4.7 MB
    before = set_threads(1)
    try:
        one = row_sum_squares(raw)
        set_threads(4)
        four = row_sum_squares(raw)
        set_threads(3)
        three = row_sum_squares(raw[1:])  # an odd row count, a view that starts one row in
    finally:
        set_threads(before)
    assert one.tobytes() == four.tobytes()
    assert three.tobytes() == one[1:].tobytes()


def test_small_tensors_decode_without_torch_to_torchs_values() -> None:
    """Scales, biases and norms are decoded by numpy as the stream passes (torch not needed yet),
    to the values torch's `.float()` gives."""
    rng = np.random.default_rng(3)
    for dtype in ("BF16", "F16", "F32", "F64", "I64", "U8"):
        t = torch.from_numpy(rng.standard_normal(999) * 300).to(torch_dtype(dtype))
        raw = t.view(torch.uint8).numpy().tobytes()
        assert decode_array(raw, dtype).tobytes() == t.float().numpy().tobytes(), dtype
    assert decode_array(b"\x00", "F8_E4M3") is None  # numpy has no FP8: the caller uses torch
    raw = bytes(range(0, 256, 5))
    assert decode_floats(raw, "F8_E4M3").tobytes() == \
        torch.frombuffer(bytearray(raw), dtype=torch.float8_e4m3fn).float().numpy().tobytes()
