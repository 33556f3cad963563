"""The forward pass's read-ahead: the same bytes, each read once, within its window; ranges read back once."""

from __future__ import annotations

import math

import torch

from fp8stream.io.header import TensorInfo
from fp8stream.methods.forward.engine import Pass, Ranges
from fp8stream.methods.forward.mapping import Run
from fp8stream.methods.forward.prefetch import Prefetcher


class FakeSource:
    """Tensors of 4 rows x 8 bytes whose bytes say who they are; counts every read."""

    def __init__(self, names: list[str]) -> None:
        self.data = {n: bytes([i] * 32) for i, n in enumerate(names)}
        self.reads: list[tuple[str, int, int]] = []

    def info(self, name: str) -> TensorInfo:
        return TensorInfo(name, "U8", (4, 8), 0, 32)

    def read_rows(self, name: str, start: int, stop: int) -> bytearray:
        self.reads.append((name, start, stop))
        return bytearray(self.data[name][start * 8: stop * 8])


def test_read_ahead_gives_each_weight_once_in_any_order_within_its_window():
    names = [f"w{i}" for i in range(8)]
    src = FakeSource(names)
    # w3 is fused from two row ranges; the model asks out of registration order, and for one
    # weight (w7) before its turn
    order = [(n, [Run(n, 0, 4)] if n != "w3" else [Run(n, 0, 2), Run(n, 2, 4)]) for n in names]
    pf = Prefetcher(src, order, torch.device("cpu"), window_bytes=64, threads=2)
    try:
        for n in ["w1", "w0", "w7", "w2", "w3", "w5", "w4", "w6"]:
            parts = pf.take(n)
            assert b"".join(bytes(p.raw) for p in parts) == src.data[n]
            assert n not in pf
            assert pf.ahead <= 64 + 32  # the window, plus the one weight always let through
    finally:
        pf.close()
    assert sorted(src.reads) == sorted({(r.source, r.start, r.stop) for _, runs in order for r in runs})


def test_ranges_read_back_once_equal_a_float_per_call():
    ranges, state = Ranges(), Pass()
    a, b = torch.tensor([[1.0, -3.0], [2.0, 0.5]]), torch.tensor([[-7.0, 1.0], [0.0, 0.25]])
    for x in (a, b):
        ranges.add(ranges.amax, "lin", x)
    ranges.add(ranges.amax, "nan_first", torch.tensor([float("nan")]))
    ranges.add(ranges.amax, "nan_first", torch.tensor([2.0]))  # the rule: a NaN before a value is replaced
    ranges.add(ranges.amax, "nan_last", torch.tensor([2.0]))
    ranges.add(ranges.amax, "nan_last", torch.tensor([float("nan")]))
    ranges.add(ranges.out_amax, "empty", torch.zeros(0, 4))
    ranges.settle(state)
    assert state.amax["lin"] == 7.0 and state.amax["nan_first"] == 2.0 and math.isnan(state.amax["nan_last"])
    assert state.out_amax == {"empty": 0.0}
    assert not ranges.amax and not ranges.out_amax  # read back once, then empty



def test_a_weight_the_model_never_asks_for_stops_holding_the_window():
    names = [f"w{i}" for i in range(6)]
    src = FakeSource(names)
    pf = Prefetcher(src, [(n, [Run(n, 0, 4)]) for n in names], torch.device("cpu"), window_bytes=64, threads=1,
                    stale_after=2)
    try:
        for n in ["w1", "w2", "w3", "w4"]:  # w0 never runs
            pf.take(n)
        assert "w0" not in pf.pending and pf.ahead <= 64 + 32
        assert b"".join(bytes(p.raw) for p in pf.take("w0")) == src.data["w0"]  # asked late: read then
        pf.take("w5")
    finally:
        pf.close()
