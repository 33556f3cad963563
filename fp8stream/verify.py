"""Compare a checkpoint with its calibrated output, trusting nothing the writer says.

Used by `calibrate --verify` (input digests taken while the input streamed past) and by
`fp8stream verify IN OUT` (both files read from disk). Tensors are matched by name:
- a tensor in both files must have the same dtype, shape and bytes (FP8 weights included);
- expected differences: an activation scale added, replaced or moved (it must be a finite,
  positive F32 scalar); a `comfy_quant` marker whose JSON differs only in the weight-only flag
  and padding; `fp8stream.*` metadata, and `_quantization_metadata` differing only in that flag;
- anything else (a tensor lost, added, changed; other metadata changed) is unexpected.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Protocol

from fp8stream.formats.comfy_quant import WEIGHT_ONLY_FLAG
from fp8stream.io.hashing import HashingStream, digest_file_tensor
from fp8stream.io.header import Header, TensorInfo
from fp8stream.io.reader import LazyFile

SCALE_SUFFIXES = (".input_scale", ".scale_input")
MARKER_SUFFIX = ".comfy_quant"
METADATA_PREFIX = "fp8stream."
QUANTIZATION_METADATA = "_quantization_metadata"
_MAX_RAW_BYTES = 1 << 16  # markers and scales are compared by value; larger ones only by digest


def is_scale(name: str) -> bool:
    return name.endswith(SCALE_SUFFIXES)


def needs_raw(name: str) -> bool:
    """Whether comparing this tensor needs its bytes, not only its digest."""
    return is_scale(name) or name.endswith(MARKER_SUFFIX)


class TensorSide(Protocol):
    """One file of the comparison: its header, and each tensor's digest and (small ones) bytes."""

    header: Header

    def digest(self, info: TensorInfo) -> bytes: ...

    def raw(self, info: TensorInfo) -> bytes | None: ...


class FileSide:
    """A file on disk, read tensor by tensor with positioned reads."""

    def __init__(self, lazy: LazyFile) -> None:
        self.lazy = lazy
        self.header = lazy.header

    def digest(self, info: TensorInfo) -> bytes:
        return digest_file_tensor(self.lazy, info)

    def raw(self, info: TensorInfo) -> bytes | None:
        return self.lazy.read(info) if info.nbytes <= _MAX_RAW_BYTES else None


class StreamSide:
    """The input of a `calibrate` run, as a HashingStream recorded it."""

    def __init__(self, stream: HashingStream) -> None:
        self.header = stream.header
        self._stream = stream

    def digest(self, info: TensorInfo) -> bytes:
        return self._stream.digests[info.name]

    def raw(self, info: TensorInfo) -> bytes | None:
        return self._stream.raw.get(info.name)


@dataclass
class Difference:
    name: str  # tensor name, or "__metadata__[key]"
    detail: str
    expected: bool


@dataclass
class Comparison:
    identical: int = 0  # tensors present in both files with equal bytes
    differences: list[Difference] = field(default_factory=list)

    @property
    def unexpected(self) -> list[Difference]:
        return [d for d in self.differences if not d.expected]

    @property
    def ok(self) -> bool:
        return not self.unexpected

    def summary(self) -> str:
        expected = len(self.differences) - len(self.unexpected)
        return f"{self.identical} tensors identical, {expected} expected differences, {len(self.unexpected)} unexpected"

    def to_dict(self) -> dict:
        return {"identical": self.identical, "ok": self.ok, "differences": [asdict(d) for d in self.differences]}


def scale_value(info: TensorInfo, raw: bytes | None) -> float | None:
    """The value of an F32 scalar scale, or None if the tensor is not one."""
    if info.dtype != "F32" or info.numel != 1 or len(info.shape) > 1 or raw is None or len(raw) != 4:
        return None
    return struct.unpack("<f", raw)[0]


def is_usable_scale(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0.0


def _without_weight_only(doc: object) -> object:
    """The JSON with every weight-only flag removed, at any depth."""
    if isinstance(doc, dict):
        return {k: _without_weight_only(v) for k, v in doc.items() if k != WEIGHT_ONLY_FLAG}
    if isinstance(doc, list):
        return [_without_weight_only(v) for v in doc]
    return doc


def _json_or_none(raw: bytes | str | None) -> object:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _compare_marker(name: str, a: bytes | None, b: bytes | None) -> Difference:
    doc_a, doc_b = _json_or_none(a), _json_or_none(b)
    if isinstance(doc_a, dict) and isinstance(doc_b, dict) and _without_weight_only(doc_a) == _without_weight_only(doc_b):
        was, now = doc_a.get(WEIGHT_ONLY_FLAG) is True, doc_b.get(WEIGHT_ONLY_FLAG) is True
        if was == now:
            return Difference(name, "marker re-encoded, same JSON", True)
        return Difference(name, f"marker rewritten: {WEIGHT_ONLY_FLAG} {'set' if now else 'removed'}", True)
    return Difference(name, "marker JSON differs beyond the weight-only flag", False)


def _index(header: Header) -> dict[str, int]:
    return {t.name: i for i, t in enumerate(header.tensors)}


def _compare_scale(name: str, before: TensorSide, after: TensorSide, comparison: Comparison,
                   position_before: int | None, position_after: int) -> None:
    info_b = after.header.by_name[name]
    value_b = scale_value(info_b, after.raw(info_b))
    if not is_usable_scale(value_b):
        what = f"{info_b.dtype}{list(info_b.shape)}" if value_b is None else f"{value_b}"
        comparison.differences.append(Difference(name, f"scale {what} is not a finite, positive F32 scalar", False))
        return
    info_a = before.header.get(name)
    if info_a is None:
        comparison.differences.append(Difference(name, f"scale added ({value_b:.6g})", True))
        return
    if info_a.dtype == info_b.dtype and info_a.shape == info_b.shape and before.digest(info_a) == after.digest(info_b):
        if position_before != position_after:
            comparison.differences.append(Difference(name, f"scale moved, value unchanged ({value_b:.6g})", True))
        else:
            comparison.identical += 1
        return
    value_a = scale_value(info_a, before.raw(info_a))
    old = f"{value_a:.6g}" if value_a is not None else f"{info_a.dtype}{list(info_a.shape)}"
    comparison.differences.append(Difference(name, f"scale replaced ({old} -> {value_b:.6g})", True))


def _compare_metadata(a: dict[str, str] | None, b: dict[str, str] | None, comparison: Comparison) -> None:
    a, b = a or {}, b or {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        label = f"__metadata__[{key}]"
        if key.startswith(METADATA_PREFIX):
            comparison.differences.append(Difference(label, "fp8stream's own record", True))
        elif key == QUANTIZATION_METADATA and key in a and key in b:
            same = _without_weight_only(_json_or_none(a[key])) == _without_weight_only(_json_or_none(b[key]))
            comparison.differences.append(Difference(label, "weight-only flags changed" if same else "changed", same))
        else:
            what = "added" if key not in a else "removed" if key not in b else "changed"
            comparison.differences.append(Difference(label, what, False))


def compare(before: TensorSide, after: TensorSide) -> Comparison:
    """Every difference between two checkpoints, each marked expected or not (module docstring)."""
    comparison = Comparison()
    index_a, index_b = _index(before.header), _index(after.header)
    _compare_metadata(before.header.metadata, after.header.metadata, comparison)
    for info_a in before.header.tensors:
        if info_a.name not in after.header:
            comparison.differences.append(Difference(info_a.name, "missing from the output", False))
    for info_b in after.header.tensors:
        name = info_b.name
        if is_scale(name):
            _compare_scale(name, before, after, comparison, index_a.get(name), index_b[name])
            continue
        info_a = before.header.get(name)
        if info_a is None:
            comparison.differences.append(Difference(name, "not in the input", False))
        elif (info_a.dtype, info_a.shape) != (info_b.dtype, info_b.shape):
            comparison.differences.append(Difference(
                name, f"{info_a.dtype}{list(info_a.shape)} became {info_b.dtype}{list(info_b.shape)}", False))
        elif before.digest(info_a) == after.digest(info_b):
            comparison.identical += 1
        elif name.endswith(MARKER_SUFFIX):
            comparison.differences.append(_compare_marker(name, before.raw(info_a), after.raw(info_b)))
        else:
            comparison.differences.append(Difference(name, "bytes differ", False))
    return comparison


def compare_files(before_path: str, after_path: str) -> Comparison:
    """`fp8stream verify IN OUT`: both headers validated, every tensor read and compared."""
    with LazyFile(before_path) as before, LazyFile(after_path) as after:
        return compare(FileSide(before), FileSide(after))


def compare_with_stream(stream: HashingStream, after_path: str) -> Comparison:
    """`calibrate --verify`: the written file re-read from disk against the input's recorded digests."""
    with LazyFile(after_path) as after:
        return compare(StreamSide(stream), FileSide(after))


def unusable_scales(path: str, names: list[str]) -> list[str]:
    """Names of scales in a written file that are not finite, positive F32 scalars."""
    with LazyFile(path) as f:
        return [name for name in names
                if (info := f.header.get(name)) is None or not is_usable_scale(scale_value(info, f.read(info)))]
