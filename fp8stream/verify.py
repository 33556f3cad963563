"""Compare a checkpoint with its calibrated output, trusting nothing the writer says.

Used by `calibrate --verify` (input digests taken while the input streamed past) and by
`fp8stream verify IN OUT` (both files read from disk). Tensors are matched by name:
- a tensor in both files must have the same dtype, shape and bytes (FP8 weights included);
- expected differences: an activation scale added, replaced or moved (it must be a finite,
  positive F32 scalar); a `comfy_quant` marker whose JSON differs only in the weight-only flag
  and padding; `fp8stream.*` metadata, and `_quantization_metadata` differing only in that flag
  or in layers it gains; and what a flavour conversion does (legacy `scale_weight` renamed
  `weight_scale` with the same bytes, a `comfy_quant` marker or a unit weight scale added, the
  `scaled_fp8` marker dropped, added or resized); an input scale dropped on a layer written weight-only;
- anything else (a tensor lost, added, changed; other metadata changed) is unexpected.
"""

from __future__ import annotations

import struct
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Protocol

from fp8stream.formats.comfy_quant import WEIGHT_ONLY_FLAG, is_weight_only
from fp8stream.formats.existing_scales import usable_scale
from fp8stream.io.hashing import HashingStream, digest_file_tensor
from fp8stream.io.header import Header, TensorInfo
from fp8stream.io.reader import LazyFile, TensorStream, open_input, read_input_header
from fp8stream.io.storage import locate
from fp8stream.names.suffixes import COMFY_MARKER, INPUT_SCALES, WEIGHT_SCALES, is_legacy_marker
from fp8stream.verify_json import json_or_none, quantization_metadata_compatible, without_weight_only

METADATA_PREFIX = "fp8stream."
QUANTIZATION_METADATA = "_quantization_metadata"
_MAX_RAW_BYTES = 1 << 16  # markers and scales are compared by value; larger ones only by digest


def is_scale(name: str) -> bool:
    return name.endswith(INPUT_SCALES)


def _counterpart(name: str) -> str | None:
    """The same layer's tensor under the other flavour's name (weight_scale <-> scale_weight, ...)."""
    for a, b in (INPUT_SCALES, WEIGHT_SCALES):
        if name.endswith(a):
            return name[: -len(a)] + b
        if name.endswith(b):
            return name[: -len(b)] + a
    return None


def needs_raw(name: str) -> bool:
    """Whether comparing this tensor needs its bytes, not only its digest."""
    return is_scale(name) or name.endswith((*WEIGHT_SCALES, COMFY_MARKER)) or is_legacy_marker(name)


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
    """A scale was read (`scale_value`: one F32 value) and ComfyUI can use it (usable_scale)."""
    return value is not None and usable_scale(value)


def _compare_marker(name: str, a: bytes | None, b: bytes | None) -> Difference:
    doc_a, doc_b = json_or_none(a), json_or_none(b)
    if isinstance(doc_a, dict) and isinstance(doc_b, dict) and without_weight_only(doc_a) == without_weight_only(doc_b):
        was, now = is_weight_only(doc_a), is_weight_only(doc_b)  # as ComfyUI reads the flag
        flag = f"marker rewritten: {WEIGHT_ONLY_FLAG} {'set' if now else 'removed'}"
        return Difference(name, "marker re-encoded, same JSON" if was == now else flag, True)
    return Difference(name, "marker JSON differs beyond the weight-only flag", False)


def _scale_tail(header: Header) -> set[str]:
    """The activation scales at the end of the data, where fp8stream moves every scale it writes."""
    tail: set[str] = set()
    for t in reversed(header.tensors):
        if not is_scale(t.name):
            break
        tail.add(t.name)
    return tail


def _compare_scale(name: str, before: TensorSide, after: TensorSide, comparison: Comparison, moved: bool) -> None:
    """An activation scale: unchanged (whatever it holds: a skipped layer's passes through), or
    added, replaced or moved, and then a finite, positive F32 scalar."""
    info_b = after.header.by_name[name]
    info_a = before.header.get(name)
    if info_a is None and (other := _counterpart(name)) in before.header and other not in after.header:
        info_a = before.header.by_name[other]  # a legacy scale_input converted to input_scale, or back
    same = info_a is not None and (info_a.dtype, info_a.shape) == (info_b.dtype, info_b.shape) \
        and before.digest(info_a) == after.digest(info_b)
    if same and not moved and info_a.name == name:
        comparison.identical += 1
        return
    value_b = scale_value(info_b, after.raw(info_b))
    if not is_usable_scale(value_b):
        what = f"{info_b.dtype}{list(info_b.shape)}" if value_b is None else f"{value_b}"
        comparison.differences.append(Difference(name, f"scale {what} is not a finite, positive F32 scalar", False))
    elif info_a is None:
        comparison.differences.append(Difference(name, f"scale added ({value_b:.6g})", True))
    elif same:
        how = "moved" if info_a.name == name else f"renamed from {info_a.name}"
        comparison.differences.append(Difference(name, f"scale {how}, value unchanged ({value_b:.6g})", True))
    else:
        value_a = scale_value(info_a, before.raw(info_a))
        old = f"{value_a:.6g}" if value_a is not None else f"{info_a.dtype}{list(info_a.shape)}"
        comparison.differences.append(Difference(name, f"scale replaced ({old} -> {value_b:.6g})", True))


def _added(name: str, info: TensorInfo, side: TensorSide) -> Difference:
    """A tensor only the output has: what a flavour conversion adds, or unexpected."""
    if name.endswith(COMFY_MARKER):
        doc = json_or_none(side.raw(info))
        if isinstance(doc, dict) and isinstance(doc.get("format"), str):
            return Difference(name, f"marker added (format {doc['format']})", True)
    if name.endswith(WEIGHT_SCALES) and scale_value(info, side.raw(info)) == 1.0:
        return Difference(name, "unit weight scale added (plain FP8 given a flavour)", True)
    if is_legacy_marker(name) and info.dtype == "F8_E4M3" and info.shape in ((0,), (2,)):
        return Difference(name, f"legacy marker added, shape {list(info.shape)}", True)
    return Difference(name, "not in the input", False)


def _missing(name: str, before: Header, side: TensorSide) -> Difference | None:
    """A tensor only the input has: None when reported at its new name, else expected or not."""
    other, after = _counterpart(name), side.header
    if other is not None and other in after and other not in before:
        return None  # renamed: compared under its output name
    if is_legacy_marker(name) and any(t.name.endswith(COMFY_MARKER) for t in after.tensors):
        return Difference(name, "legacy marker dropped (layers now carry comfy_quant markers)", True)
    if is_scale(name) and _written_weight_only(name.rsplit(".", 1)[0], side):
        return Difference(name, "input scale dropped (the layer is written weight-only with no scale)", True)
    return Difference(name, "missing from the output", False)


def _written_weight_only(layer: str, side: TensorSide) -> bool:
    """Whether the output runs the layer weight-only: its comfy_quant flag, or a legacy marker of 2 elements."""
    if (marker := side.header.get(layer + COMFY_MARKER)) is not None:
        doc = json_or_none(side.raw(marker))
        return isinstance(doc, dict) and is_weight_only(doc)
    return any(is_legacy_marker(t.name) and t.shape == (2,) for t in side.header.tensors)


def _compare_metadata(a: dict[str, str] | None, b: dict[str, str] | None, comparison: Comparison) -> None:
    a, b = a or {}, b or {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        label = f"__metadata__[{key}]"
        if key.startswith(METADATA_PREFIX):
            detail, expected = "fp8stream's own record", True
        elif key == QUANTIZATION_METADATA and key in a and key in b:
            expected = quantization_metadata_compatible(json_or_none(a[key]), json_or_none(b[key]))
            detail = "weight-only flags or layers synced" if expected else "changed"
        else:
            detail, expected = "added" if key not in a else "removed" if key not in b else "changed", False
        comparison.differences.append(Difference(label, detail, expected))


def compare(before: TensorSide, after: TensorSide) -> Comparison:
    """Every difference between two checkpoints, each marked expected or not (module docstring)."""
    comparison = Comparison()
    tail_a, tail_b = _scale_tail(before.header), _scale_tail(after.header)
    _compare_metadata(before.header.metadata, after.header.metadata, comparison)
    for info_a in before.header.tensors:
        if info_a.name not in after.header and (missing := _missing(info_a.name, before.header, after)):
            comparison.differences.append(missing)
    for info_b in after.header.tensors:
        name = info_b.name
        if is_scale(name):
            _compare_scale(name, before, after, comparison, name in tail_b and name not in tail_a)
            continue
        info_a = before.header.get(name)
        renamed_from = None
        if info_a is None and (other := _counterpart(name)) in before.header and other not in after.header:
            info_a, renamed_from = before.header.by_name[other], other
        if info_a is None:
            comparison.differences.append(_added(name, info_b, after))
        elif renamed_from is not None:
            same = ((info_a.dtype, info_a.shape) == (info_b.dtype, info_b.shape)
                    and before.digest(info_a) == after.digest(info_b))
            what = f"renamed from {renamed_from}" + ("" if same else ", bytes differ")
            comparison.differences.append(Difference(name, what, same))
        elif is_legacy_marker(name) and info_b.dtype == "F8_E4M3" and info_b.shape in ((0,), (2,)) \
                and (info_a.shape != info_b.shape or before.digest(info_a) != after.digest(info_b)):
            comparison.differences.append(Difference(name, f"legacy marker resized to {list(info_b.shape)}", True))
        elif name.endswith(COMFY_MARKER) and info_a.dtype == info_b.dtype == "U8" and info_a.shape != info_b.shape:
            # Setting the weight-only flag (--exclude, --preset) lengthens the marker and pads it:
            # judged by its JSON, like a marker of unchanged length.
            comparison.differences.append(_compare_marker(name, before.raw(info_a), after.raw(info_b)))
        elif (info_a.dtype, info_a.shape) != (info_b.dtype, info_b.shape):
            comparison.differences.append(Difference(
                name, f"{info_a.dtype}{list(info_a.shape)} became {info_b.dtype}{list(info_b.shape)}", False))
        elif before.digest(info_a) == after.digest(info_b):
            comparison.identical += 1
        elif name.endswith(COMFY_MARKER):
            comparison.differences.append(_compare_marker(name, before.raw(info_a), after.raw(info_b)))
        else:
            comparison.differences.append(Difference(name, "bytes differ", False))
    return comparison


def read_back(path: str) -> StreamSide:
    """A file read once, front to back (plain or zstd): every tensor's digest, small ones' bytes."""
    with closing(open_input(locate(path))) as source:
        stream = HashingStream(TensorStream(source, read_input_header(source)), keep_raw=needs_raw)
        for info in stream.header.tensors:
            for _ in stream.chunks(info):
                pass
        stream.finish()
    return StreamSide(stream)


def compare_files(before_path: str, after_path: str) -> Comparison:
    """`fp8stream verify IN OUT`: both headers validated, both files read once and compared."""
    return compare(read_back(before_path), read_back(after_path))


def unusable_scales(path: str, names: list[str], side: TensorSide | None = None) -> list[str]:
    """Names of scales in a written file that are not finite, positive F32 scalars; `side`: the
    file already read back (needed for compressed files), else positioned reads of the scales."""
    if side is None:
        with LazyFile(path) as f:
            return unusable_scales(path, names, FileSide(f))
    return [name for name in names
            if (info := side.header.get(name)) is None or not is_usable_scale(scale_value(info, side.raw(info)))]
