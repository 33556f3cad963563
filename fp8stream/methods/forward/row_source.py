"""Positioned reads of whole rows of checkpoint tensors, decoded to float32.

Any object with `info(name) -> TensorInfo`, `read_rows(name, start, stop) -> bytes` and
`held(name, start, stop, rows)` can feed the engine: the calibration pass's
`fp8stream.io.source.TensorSource` (one file or the shards of a sharded model, positioned reads,
never mapped) is the one the CLI gives it. `held` is told every row range the reader decodes, as
it holds the bytes (on a GPU: the one copy there), so the run's copy can check and show them
without reading or copying them again (pipeline/placed_run.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np
import torch

from fp8stream.io.dtypes import torch_dtype
from fp8stream.io.header import TensorInfo
from fp8stream.scales.fp8_maths import decode_fp8

FP8_DTYPES = ("F8_E4M3",)


class RowSource(Protocol):
    def info(self, name: str) -> TensorInfo: ...

    def read_rows(self, name: str, start: int, stop: int) -> bytes: ...

    def held(self, name: str, start: int, stop: int, rows: Any) -> None: ...


def decode(raw: bytes | bytearray, dtype: str, shape: tuple[int, ...],
           device: torch.device | str = "cpu") -> torch.Tensor:
    """Bytes of a tensor part as float32 on `device` (FP8 with a unit scale). The raw bytes
    travel, not float32: a quarter of the transfer for FP8, and the GPU does the conversion."""
    tdt = torch_dtype(dtype)
    if tdt is None:
        raise ValueError(f"dtype {dtype} cannot be decoded")
    if dtype in FP8_DTYPES and torch.device(device).type == "cpu":
        # a 256-entry table lookup: twice as fast as torch's float8 -> float32 cast on the CPU,
        # and it reads the bytes in place (no writable copy)
        return torch.from_numpy(decode_fp8(np.frombuffer(raw, dtype=np.uint8))).reshape(shape)
    buf = raw if isinstance(raw, bytearray) else bytearray(raw)  # torch wants a writable buffer
    t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.zeros(0, dtype=torch.uint8)
    return t.to(device).view(tdt).to(torch.float32).reshape(shape)


class Reader:
    """Rows of checkpoint tensors as the float32 values ComfyUI computes with."""

    def __init__(self, source: RowSource, scale_names: Mapping[str, str | None],
                 device: torch.device | str = "cpu") -> None:
        self.source = source
        self.scale_names = scale_names  # FP8 weight -> its weight scale tensor (formats.layers)
        self.device = torch.device(device)
        self._scales: dict[str, float] = {}

    def weight_scale(self, name: str) -> float:
        if name not in self._scales:
            key = self.scale_names.get(name)
            self._scales[name] = 1.0 if key is None else float(self.rows(key, 0, 1, scaled=False).reshape(-1)[0])
        return self._scales[name]

    def rows(self, name: str, start: int, stop: int, scaled: bool = True,
             read: bytes | bytearray | torch.Tensor | None = None) -> torch.Tensor:
        """Rows [start, stop) as float32; `read`: their bytes already read (by the read-ahead:
        host bytes, or a uint8 tensor already on the device), else read now."""
        info = self.source.info(name)
        shape = (stop - start,) + tuple(info.shape[1:]) if info.shape else ()
        raw = self.source.read_rows(name, start, stop) if read is None else read
        self.source.held(name, start, stop, raw)
        if isinstance(raw, torch.Tensor):  # the same conversion as decode's, on the device
            t = raw.view(torch_dtype(info.dtype)).to(torch.float32).reshape(shape)
        else:
            t = decode(raw, info.dtype, shape, self.device if scaled else "cpu")
        if scaled and info.dtype in FP8_DTYPES:
            t.mul_(self.weight_scale(name))
        return t
