"""The row-norm primitives: the CPU lookup table and the torch (CUDA) path give the same FP8 sums;
the BF16/F16/F32 producers' norms are the exact sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fp8stream.io.dtypes import decode_array, decode_floats, torch_dtype
from fp8stream.methods.simulate.producer_rows import RowSums, decode_rows, norms_squared
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


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_full_precision_row_norms_are_the_exact_sums(dtype: str) -> None:
    """The bound's row norms of BF16/F16/F32 producers (numpy, no torch) against exact float64
    sums: BF16 and F16 squares are exact in float32 and summed in float64 (rounding only at the
    end); an F32 square is rounded once (2^-24 relative)."""
    rng = np.random.default_rng(4)
    # rows of very different magnitudes: F16 subnormals (below 2^-14) and large values included
    values = rng.standard_normal((37, 3072)) * np.exp2(rng.integers(-24, 8, size=(37, 1)))
    t = torch.from_numpy(values).to(torch_dtype(dtype))
    raw = t.view(torch.uint8).numpy()
    exact = [math.fsum(v * v for v in row) for row in t.double().tolist()]
    assert min(exact) > 0
    got = norms_squared(raw, dtype)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=1e-12 if dtype != "F32" else 2 ** -23)
    # the rows streamed in chunks that split rows anywhere give the same sums
    sums = RowSums(dtype, tuple(t.shape), hold=True)
    flat = raw.tobytes()
    for start in range(0, len(flat), 5000):
        sums.feed(flat[start : start + 5000])
    blocks, held = sums.result()
    assert np.concatenate(blocks).tobytes() == got.tobytes()
    assert np.concatenate(held).tobytes() == flat
    assert decode_rows(raw, dtype).tobytes() == t.float().numpy().tobytes()  # BF16: exactly, as torch


def test_norms_of_non_finite_rows_are_not_finite() -> None:
    """A NaN or Inf in a BF16 producer's row makes that row's norm non-finite, as torch's norm did
    (the bound then says it has no range); the other rows keep theirs."""
    t = torch.ones(3, 8, dtype=torch.bfloat16)
    t[0, 3], t[1, 5] = float("nan"), float("inf")
    got = norms_squared(t.view(torch.uint8).numpy(), "BF16")
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 8.0
