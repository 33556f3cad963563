"""The suspicious-weight checks give the same warnings whether the rows are checked on the host
(numpy, the CPU's path) or where a GPU's rows go (torch tensors, read back once at the end)."""

from __future__ import annotations

import numpy as np
import torch

from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo
from fp8stream.pipeline.weight_checks import WeightChecks

ROWS, COLS = 6, 8


def _layer(name: str) -> FP8Layer:
    return FP8Layer(name, "comfy", TensorInfo(name + ".weight", "F8_E4M3", (ROWS, COLS), 0, ROWS * COLS),
                    None, None, None, None)


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    normal = rng.integers(1, 0x7E, size=(ROWS, COLS), dtype=np.uint8)
    nan = normal.copy()
    nan[1, 2], nan[4, 0], nan[5, 7] = 0x7F, 0xFF, 0xFF  # e4m3fn's NaN, either sign
    zero_but_nan = np.zeros((ROWS, COLS), dtype=np.uint8)
    zero_but_nan[3, 3] = 0xFF
    negative_zero = np.full((ROWS, COLS), 0x80, dtype=np.uint8)  # -0 everywhere: all zero
    largest, smallest = np.zeros((ROWS, COLS), dtype=np.uint8), np.full((ROWS, COLS), 0x80, dtype=np.uint8)
    largest[5, 7], smallest[0, 0] = 0xFE, 0x01  # -448 and the least subnormal: the edges of "finite, not zero"
    return {"normal": normal, "nan": nan, "zero": np.zeros((ROWS, COLS), dtype=np.uint8),
            "zero_but_nan": zero_but_nan, "negative_zero": negative_zero, "largest": largest, "smallest": smallest}


def _warnings(as_tensor: bool) -> dict[str, list[str]]:
    checks = WeightChecks()
    weights = _weights()
    for name, w in weights.items():
        for start in range(0, ROWS, 4):  # in chunks of rows, as the copy shows them
            rows = w[start:start + 4]
            checks.observe(_layer(name), torch.from_numpy(rows.copy()) if as_tensor else rows)
    return {name: [str(x.text) for x in checks.warnings(_layer(name), 1.0, None)] for name in weights}


def test_the_checks_on_a_device_tensor_say_what_the_host_checks_say():
    host = _warnings(as_tensor=False)
    assert host == {"normal": [], "nan": ["FP8 weight holds 3 NaN values (of 48)"],
                    "zero": ["FP8 weight is all zero"], "zero_but_nan": ["FP8 weight holds 1 NaN value (of 48)",
                                                                         "FP8 weight is all zero apart from NaN"],
                    "negative_zero": ["FP8 weight is all zero"], "largest": [], "smallest": []}
    assert _warnings(as_tensor=True) == host


class _Rows:
    """A method that wants weight rows: notes what it was given."""

    def __init__(self) -> None:
        self.given: list[object] = []

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.given.append(rows)


def test_rows_go_to_a_gpu_once_host_bytes_copied_there_a_device_tensor_as_it_is():
    """On a GPU (any device but "cpu"; the CPU's own device object stands in) the copy's host rows
    are copied there for the checks and the method; rows the pass already holds there are used as
    they are: no copy, no numpy conversion of a device tensor."""
    from fp8stream.methods.interface import MethodPlan
    from fp8stream.pipeline.loop import Feed

    method, checks, layer = _Rows(), WeightChecks(), _layer("w")
    feed = Feed(method, MethodPlan(rows=True), "cpu:0", False, None)
    host = _weights()["nan"]
    held = torch.from_numpy(host.copy())
    feed.show(layer, host, 0, checks)
    feed.show(layer, held, 0, checks)
    copied, used = method.given
    assert isinstance(copied, torch.Tensor) and torch.equal(copied, held)
    assert used is held
    assert checks.warnings(layer, 1.0, None)[0].text.startswith("FP8 weight holds 6 NaN values")  # 3 each, both checked
