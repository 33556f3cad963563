"""float8_e4m3fn facts and fast decoding of raw FP8 bytes.

The CPU paths are table lookups in numpy (no torch needed, and 3-4x faster than torch's float8
cast on the CPU); the sums of squares of large blocks of rows are spread over the cores, a block
of whole rows per thread, so every row's sum is the same whatever the thread count.
"""

from __future__ import annotations

import functools
import os

import numpy as np

E4M3_MAX = 448.0
PARALLEL_MIN_BYTES = 1 << 20  # below this, one thread: handing work over costs more than it saves
# np.take turns its uint8 indices into a temporary intp array (8 bytes an element): decoding a whole
# weight at once held 2x its float32 size beside it (377 MB for Flux's 47M-element proj_out). In
# steps, that temporary is 8 MB, and the lookups stay in cache (measured: 2-5x faster)
DECODE_STEP = 1 << 20

_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_pool = None
_pool_workers = 0


def set_threads(n: int) -> int:
    """Threads for the row sums (a batch worker takes its share of the cores); the previous count."""
    global _threads
    previous, _threads = _threads, max(1, n)
    return previous


@functools.lru_cache(maxsize=1)
def fp8_table() -> np.ndarray:
    """float32[256]: the value of each FP8 byte (NaN for 0x7f and 0xff), decoded by the format's
    rule: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal."""
    b = np.arange(256)
    exponent, mantissa = (b >> 3) & 0xF, b & 0x7
    magnitude = np.where(exponent == 0, mantissa / 8.0 * 2.0 ** -6, (1 + mantissa / 8.0) * 2.0 ** (exponent - 7.0))
    table = np.where(b >= 128, -magnitude, magnitude).astype(np.float32)
    table.view(np.uint32)[[0x7F, 0xFF]] = (0x7FF00000, 0xFFF00000)  # NaN, bit for bit as torch casts it
    table.setflags(write=False)
    return table


def decode_fp8(raw: np.ndarray) -> np.ndarray:
    """Raw FP8 bytes (numpy uint8, any shape) as float32 values with a unit scale (a new array)."""
    table = fp8_table()
    out = np.empty(raw.shape, dtype=np.float32)
    flat_raw, flat_out = raw.reshape(-1), out.reshape(-1)
    for start in range(0, flat_raw.size, DECODE_STEP):
        np.take(table, flat_raw[start : start + DECODE_STEP], out=flat_out[start : start + DECODE_STEP])
    return out


def dequantize_rows(rows, dtype=None):
    """Raw FP8 bytes (a uint8 torch tensor, any device) to values with a unit weight scale
    (float32 unless `dtype`)."""
    import torch

    if rows.device.type == "cpu":
        values = torch.from_numpy(decode_fp8(rows.numpy()))
    else:
        values = rows.view(torch.float8_e4m3fn).to(torch.float32)
    return values if dtype is None or dtype == torch.float32 else values.to(dtype)


@functools.lru_cache(maxsize=1)
def _pair_squares() -> np.ndarray:
    """float32[65536]: squares of the two FP8 values packed in a uint16 (NaN counts 0)."""
    sq = np.nan_to_num(fp8_table(), nan=0.0) ** 2
    idx = np.arange(65536)
    # a² + b² is symmetric, so the byte order of the pair does not matter
    return (sq[idx & 0xFF] + sq[idx >> 8]).astype(np.float32)


def row_sum_squares(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Σ_j w_ij² of each row of raw FP8 bytes (numpy uint8 [r, n]), unit weight scale.

    A lookup of byte pairs in a 256 KB table: no F32 copy of the weight (docs/methods.md). NaN
    bytes count as 0 (reported elsewhere). Large inputs are split into blocks of rows, one per
    thread (numpy releases the GIL in the lookup and the sums).
    """
    r = rows.shape[0]
    if out is None:
        out = np.empty(r, dtype=np.float64)
    workers = min(_threads, max(1, rows.nbytes // PARALLEL_MIN_BYTES), r)
    if workers <= 1:
        _row_sum_squares(rows, out)
        return out
    step = -(-r // workers)
    parts = [(rows[s : s + step], out[s : s + step]) for s in range(0, r, step)]
    futures = [_thread_pool().submit(_row_sum_squares, *p) for p in parts[1:]]
    _row_sum_squares(*parts[0])
    for f in futures:
        f.result()
    return out


def _row_sum_squares(rows: np.ndarray, out: np.ndarray) -> None:
    n = rows.shape[1]
    if n % 2 == 0 and rows.flags.c_contiguous:
        table, values = _pair_squares(), rows.view(np.uint16)
    else:  # odd widths: one byte at a time
        table, values = np.nan_to_num(fp8_table(), nan=0.0) ** 2, rows
    # Blocks of ~128K lookups keep the temporary in cache: 2x faster than one big take.
    step = max(1, (1 << 17) // max(1, values.shape[1]))
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = np.take(table, values[start : start + step]).sum(axis=1, dtype=np.float64)


def _thread_pool():
    """Workers beside the calling thread (which sums a block itself), started on first use."""
    global _pool, _pool_workers
    if _pool is None or _pool_workers < _threads - 1:
        from fp8stream.io.overlap import start_pool

        _pool_workers = max(1, _threads - 1)
        _pool = start_pool(_pool_workers, "fp8stream-rows")
    return _pool


def row_sum_squares_torch(rows):
    """The same sums on any torch device (the CUDA path): raw FP8 bytes (uint8 [r, n]) decoded
    to float32, NaN as 0, squares summed in float64. Tests check it equals row_sum_squares."""
    import torch

    w = rows.view(torch.float8_e4m3fn).float().nan_to_num_(0.0, posinf=0.0, neginf=0.0)
    return w.square_().sum(1, dtype=torch.float64)
