"""Positioned reads of whole rows of checkpoint tensors, decoded to float32.

Any object with `info(name) -> TensorInfo` and `read_rows(name, start, stop) -> bytes` can feed
the engine (the calibration pass's by-name lazy source has both); `FileRows` is ours: one file
or the shards of a sharded model, read with os.pread, never mapped (touched pages of a mapping
count in RSS: docs/ explains).
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, Protocol

import numpy as np
import torch

from fp8stream.io.dtypes import torch_dtype
from fp8stream.io.header import Header, TensorInfo

FP8_DTYPES = ("F8_E4M3",)


class RowSource(Protocol):
    def info(self, name: str) -> TensorInfo: ...

    def read_rows(self, name: str, start: int, stop: int) -> bytes: ...


class FileRows:
    """Rows of tensors of one or several safetensors files (a tensor -> its file's path)."""

    def __init__(self, headers: Mapping[str, Header], path_of: Mapping[str, str]) -> None:
        self._headers = dict(headers)  # path -> header
        self._path_of = dict(path_of)  # tensor -> path
        self._fds: dict[str, int] = {}

    @classmethod
    def single(cls, path: str, header: Header) -> "FileRows":
        return cls({path: header}, {t.name: path for t in header.tensors})

    def info(self, name: str) -> TensorInfo:
        return self._headers[self._path_of[name]].by_name[name]

    def read_rows(self, name: str, start: int, stop: int) -> bytes:
        path = self._path_of[name]
        header = self._headers[path]
        info = header.by_name[name]
        rows = info.shape[0] if info.shape else 1
        row_bytes = info.nbytes // max(rows, 1)
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        want = (stop - start) * row_bytes
        data = os.pread(fd, want, header.data_start + info.begin + start * row_bytes)
        if len(data) != want:
            raise OSError(f"{path}: file ends inside {name!r}")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def scale_key(weight_name: str, names) -> str | None:
    """The weight scale of an FP8 weight `X.weight` (ComfyUI's weight_scale, legacy scale_weight)."""
    stem = weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name
    for key in (stem + ".weight_scale", stem + ".scale_weight"):
        if key in names:
            return key
    return None


def decode(raw: bytes, dtype: str, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Bytes of a tensor part as float32 on `device` (FP8 with a unit scale). The raw bytes
    travel, not float32: a quarter of the transfer for FP8, and the GPU does the conversion."""
    tdt = torch_dtype(dtype)
    if tdt is None:
        raise ValueError(f"dtype {dtype} cannot be decoded")
    if dtype in FP8_DTYPES and torch.device(device).type == "cpu":
        # a 256-entry table lookup: twice as fast as torch's float8 -> float32 cast on the CPU,
        # and it reads the bytes in place (no writable copy)
        return torch.from_numpy(_fp8_table()[np.frombuffer(raw, dtype=np.uint8)]).reshape(shape)
    buf = bytearray(raw)  # torch wants a writable buffer
    t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.zeros(0, dtype=torch.uint8)
    return t.to(device).view(tdt).to(torch.float32).reshape(shape)


@functools.lru_cache(maxsize=1)
def _fp8_table() -> np.ndarray:
    return torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()


class Reader:
    """Rows of checkpoint tensors as the float32 values ComfyUI computes with."""

    def __init__(self, source: RowSource, names, device: torch.device | str = "cpu") -> None:
        self.source = source
        self.names = set(names)
        self.device = torch.device(device)
        self._scales: dict[str, float] = {}

    def weight_scale(self, name: str) -> float:
        if name not in self._scales:
            key = scale_key(name, self.names)
            self._scales[name] = 1.0 if key is None else float(self.rows(key, 0, 1, scaled=False).reshape(-1)[0])
        return self._scales[name]

    def rows(self, name: str, start: int, stop: int, scaled: bool = True) -> torch.Tensor:
        info = self.source.info(name)
        shape = (stop - start,) + tuple(info.shape[1:]) if info.shape else ()
        t = decode(self.source.read_rows(name, start, stop), info.dtype, shape, self.device if scaled else "cpu")
        if scaled and info.dtype in FP8_DTYPES:
            t.mul_(self.weight_scale(name))
        return t
