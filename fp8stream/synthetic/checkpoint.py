"""Build FP8 checkpoints in ComfyUI's formats: the demo example, test fixtures, benchmarks.

Tensors are produced one at a time and written with the project's streaming writer, so a
multi-GB benchmark file never sits in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from fp8stream.io.atomic import AtomicOutput
from fp8stream.io.dtypes import DTYPE_BITS
from fp8stream.io.header import OutputEntry
from fp8stream.io.writer import StreamingWriter
from fp8stream.names.suffixes import (
    BIAS,
    COMFY_MARKER,
    INPUT_SCALE,
    LEGACY_INPUT_SCALE,
    LEGACY_MARKER,
    LEGACY_WEIGHT_SCALE,
    WEIGHT,
    WEIGHT_SCALE,
    layer_of,
)
from fp8stream.scales.fp8_maths import E4M3_MAX

# The safetensors library's own order (docs/formats.md): widest dtype first, then the later of
# its dtype enum (DTYPE_BITS lists it in that order: F8_E4M3 before U8, so markers come after
# every FP8 weight), then the name.
_SAFETENSORS_ORDER = {name: (-bits, -rank) for rank, (name, bits) in enumerate(DTYPE_BITS.items())}


@dataclass
class SyntheticTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes | Callable[[], Iterable[bytes]]  # the bytes, or a maker of chunks

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * DTYPE_BITS[self.dtype] // 8

    def chunks(self) -> Iterable[bytes]:
        return [self.data] if isinstance(self.data, (bytes, bytearray)) else self.data()


def f32_scalar(name: str, value: float) -> SyntheticTensor:
    return SyntheticTensor(name, "F32", (), np.float32(value).tobytes())


def scale_values(name: str, values: list[float], dtype: str = "F32",
                 shape: tuple[int, ...] | None = None) -> SyntheticTensor:
    """A scale tensor of these values as F32 or BF16 (each float32's top half); `shape`: () for one
    value, (n,) for several, unless given (a [1] scale, say)."""
    raw = np.array(values, np.float32)
    data = (raw.view(np.uint32) >> 16).astype(np.uint16).tobytes() if dtype == "BF16" else raw.tobytes()
    if shape is None:
        shape = (len(values),) if len(values) != 1 else ()
    return SyntheticTensor(name, dtype, shape, data)


def marker(name: str, doc: dict) -> SyntheticTensor:
    raw = json.dumps(doc).encode("utf-8")
    return SyntheticTensor(name, "U8", (len(raw),), raw)


def quantize_fp8(weight: torch.Tensor) -> tuple[bytes, float]:
    """Tensor-wise FP8: bytes of round(W / s) and s = amax / 448, as converters do."""
    w = weight.float()
    scale = float(w.abs().max()) / E4M3_MAX or 1.0
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.view(torch.uint8).numpy().tobytes(), scale


def random_fp8_rows(out_features: int, in_features: int, seed: int,
                    chunk_rows: int = 4096) -> Callable[[], Iterable[bytes]]:
    """A maker of random, finite FP8 weight bytes, chunk by chunk (fast for multi-GB files)."""

    def make() -> Iterable[bytes]:
        rng = np.random.default_rng(seed)
        for start in range(0, out_features, chunk_rows):
            rows = min(chunk_rows, out_features - start)
            b = rng.integers(0, 256, size=rows * in_features, dtype=np.uint8)
            # Keep magnitudes moderate and values finite: clear the top exponent bit, avoid NaN (0x7f/0xff).
            b &= 0xBF
            yield b.tobytes()

    return make


def comfy_fp8_linear(
    name: str,
    weight: torch.Tensor | tuple[int, int],
    seed: int = 0,
    input_scale: float | None = None,
    weight_only: bool = False,
    bias: bool = False,
) -> list[SyntheticTensor]:
    """One linear in ComfyUI's mixed-precision format; `weight` a tensor, or a shape for random bytes."""
    if isinstance(weight, torch.Tensor):
        raw, scale = quantize_fp8(weight)
        out_f, in_f = weight.shape
        w = SyntheticTensor(name + WEIGHT, "F8_E4M3", (out_f, in_f), raw)
    else:
        out_f, in_f = weight
        scale = 0.01 + (seed % 7) * 0.001
        w = SyntheticTensor(name + WEIGHT, "F8_E4M3", (out_f, in_f), random_fp8_rows(out_f, in_f, seed))
    doc: dict = {"format": "float8_e4m3fn"}
    if weight_only:
        doc["full_precision_matrix_mult"] = True
    tensors = [w, f32_scalar(name + WEIGHT_SCALE, scale), marker(name + COMFY_MARKER, doc)]
    if input_scale is not None:
        tensors.append(f32_scalar(name + INPUT_SCALE, input_scale))
    if bias:
        zeros = torch.zeros(out_f, dtype=torch.bfloat16).view(torch.uint8).numpy().tobytes()
        tensors.append(SyntheticTensor(name + BIAS, "BF16", (out_f,), zeros))
    return tensors


def _fp8_weight(name: str, weight: torch.Tensor | tuple[int, int], seed: int) -> tuple[SyntheticTensor, float]:
    if isinstance(weight, torch.Tensor):
        raw, scale = quantize_fp8(weight)
        return SyntheticTensor(name + WEIGHT, "F8_E4M3", tuple(weight.shape), raw), scale
    out_f, in_f = weight
    return SyntheticTensor(name + WEIGHT, "F8_E4M3", (out_f, in_f), random_fp8_rows(out_f, in_f, seed)), \
        0.01 + (seed % 7) * 0.001


def legacy_fp8_linear(name: str, weight: torch.Tensor | tuple[int, int], seed: int = 0,
                      input_scale: float | None = None) -> list[SyntheticTensor]:
    """One linear in the legacy "scaled fp8" flavour (add `legacy_marker` once per file)."""
    w, scale = _fp8_weight(name, weight, seed)
    tensors = [w, f32_scalar(name + LEGACY_WEIGHT_SCALE, scale)]
    if input_scale is not None:
        tensors.append(f32_scalar(name + LEGACY_INPUT_SCALE, input_scale))
    return tensors


def legacy_marker(prefix: str = "", weight_only: bool = False) -> SyntheticTensor:
    """The top-level `scaled_fp8` tensor: 2 elements = weight-only, empty = FP8 matmul."""
    n = 2 if weight_only else 0
    return SyntheticTensor(prefix + LEGACY_MARKER, "F8_E4M3", (n,), bytes(n))


def plain_fp8_linear(name: str, weight: torch.Tensor) -> list[SyntheticTensor]:
    """One linear as plain FP8: the weight cast to float8_e4m3fn, no scale (1.0 implied)."""
    q = weight.float().clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return [SyntheticTensor(name + WEIGHT, "F8_E4M3", tuple(weight.shape), q.view(torch.uint8).numpy().tobytes())]


def bf16_tensor(name: str, t: torch.Tensor) -> SyntheticTensor:
    return SyntheticTensor(name, "BF16", tuple(t.shape),
                           t.to(torch.bfloat16).contiguous().view(torch.uint8).numpy().tobytes())


def write_checkpoint(path: str, tensors: list[SyntheticTensor], metadata: dict[str, str] | None = None,
                     order: str = "safetensors") -> None:
    """Write tensors; order 'safetensors' mimics the library's writer (dtype widest first, then
    name: scales before weights, markers last), 'given' keeps the list's order."""
    if order == "safetensors":
        tensors = sorted(tensors, key=lambda t: (_SAFETENSORS_ORDER[t.dtype], t.name))
    entries = [OutputEntry(t.name, t.dtype, t.shape, t.nbytes) for t in tensors]
    with AtomicOutput(path) as sink:
        writer = StreamingWriter(sink, entries, metadata)
        writer.write_header()
        for t in tensors:
            for chunk in t.chunks():
                if chunk:  # empty tensors take no bytes
                    writer.write(t.name, chunk)
        writer.finish()


def random_bf16(shape: tuple[int, ...], seed: int, chunk_elements: int = 4 << 20) -> Callable[[], Iterable[bytes]]:
    """A maker of random finite BF16 bytes (magnitudes 2^-8..2^-1), chunk by chunk."""

    def make() -> Iterable[bytes]:
        rng = np.random.default_rng(seed)
        total = 1
        for d in shape:
            total *= d
        for start in range(0, total, chunk_elements):
            n = min(chunk_elements, total - start)
            r = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
            # sign and mantissa random, exponent field 119..126
            yield ((r & 0x807F) | ((119 + (r >> 8 & 7)) << 7)).astype(np.uint16).tobytes()

    return make


def from_inventory(specs, seed: int = 0) -> list[SyntheticTensor]:
    """Synthetic tensors for an inventory (a family's, `fp8stream.families.inventory(key)`): FP8 linears in
    ComfyUI's format with random weights, everything else random BF16."""
    tensors: list[SyntheticTensor] = []
    for i, spec in enumerate(specs):
        if spec.fp8:
            layer = layer_of(spec.name)
            tensors += comfy_fp8_linear(layer, spec.shape, seed=seed + i)
        else:
            tensors.append(SyntheticTensor(spec.name, "BF16", spec.shape, random_bf16(spec.shape, seed + i)))
    return tensors
