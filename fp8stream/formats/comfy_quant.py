"""The per-layer `comfy_quant` marker: a U8 tensor holding JSON such as {"format": "float8_e4m3fn"}.

We rewrite it while streaming, so the rewritten bytes must have a length known from the header
alone (pipes depend on it), and not from the method's weight-only choice either (so the data's
places are fixed before the method runs: formats/room.py): every rewritten marker takes room for
either flag, its input size plus FLAG_BYTES, space padded (JSON allows trailing spaces, and
ComfyUI's `json.loads` reads them).
"""

from __future__ import annotations

import json

TENSORWISE_FP8 = "float8_e4m3fn"
WEIGHT_ONLY_FLAG = "full_precision_matrix_mult"
FLAG_TEXT = b',"full_precision_matrix_mult":true'
FLAG_BYTES = len(FLAG_TEXT)  # what setting the flag may add to a marker
# Largest marker we read into memory; real ones are a few dozen bytes.
MAX_MARKER_BYTES = 1 << 16


class MarkerError(ValueError):
    """The marker bytes are not a JSON object, or cannot be rewritten in the reserved size."""


def parse_marker(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MarkerError("comfy_quant is not JSON") from None
    if not isinstance(doc, dict):
        raise MarkerError("comfy_quant is not a JSON object")
    return doc


def encode_doc(doc: dict) -> bytes:
    try:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):  # lone surrogates, NaN-free, deep nesting
        raise MarkerError("comfy_quant cannot be written back as JSON") from None


def pad(raw: bytes, size: int) -> bytes:
    if len(raw) > size:
        raise MarkerError(f"marker JSON needs {len(raw)} bytes, {size} reserved")
    return raw + b" " * (size - len(raw))


def marker_size(input_size: int) -> int:
    """Output size of a rewritten marker, from the header alone: room for the flag set or not."""
    return input_size + FLAG_BYTES


def is_weight_only(doc: dict) -> bool:
    """Whether ComfyUI runs the layer weight-only: it tests the flag's value as Python does (any
    true value: `1` and the string "false" too), not for JSON's `true` alone."""
    return bool(doc.get(WEIGHT_ONLY_FLAG))


def with_weight_only(doc: dict, weight_only: bool) -> dict:
    """A copy of the marker with the weight-only flag set or removed."""
    out = {k: v for k, v in doc.items() if k != WEIGHT_ONLY_FLAG}
    if weight_only:
        out[WEIGHT_ONLY_FLAG] = True
    return out


def rewrite_marker(raw: bytes, weight_only: bool, size: int) -> bytes:
    """The marker with the flag set or removed, in exactly `size` bytes; other keys unchanged.

    An unchanged marker keeps its bytes; setting the flag splices it before the closing brace,
    so it always fits in len(raw) + FLAG_BYTES whatever the original spacing.
    """
    doc = parse_marker(raw)
    if is_weight_only(doc) == weight_only:
        return pad(bytes(raw), size)
    compact = encode_doc(with_weight_only(doc, weight_only))
    if len(compact) <= size or not weight_only:
        return pad(compact, size)
    body = bytes(raw).rstrip()[:-1].rstrip()  # without the closing brace
    doc_without = {k: v for k, v in doc.items() if k != WEIGHT_ONLY_FLAG}
    if WEIGHT_ONLY_FLAG in doc or not doc_without:  # "flag": false, or an empty object: re-encode
        raise MarkerError(f"marker cannot take the weight-only flag in {size} bytes")
    return pad(body + FLAG_TEXT + b"}", size)
