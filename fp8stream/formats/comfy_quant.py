"""The per-layer `comfy_quant` marker: a U8 tensor holding JSON such as {"format": "float8_e4m3fn"}.

We rewrite it in place while streaming, so the rewritten bytes must have a length known from
the header alone: JSON allows spaces, so a shorter document is padded with trailing spaces.
"""

from __future__ import annotations

import json

TENSORWISE_FP8 = "float8_e4m3fn"
WEIGHT_ONLY_FLAG = "full_precision_matrix_mult"
# Largest marker we read into memory; real ones are a few dozen bytes.
MAX_MARKER_BYTES = 1 << 16


class MarkerError(ValueError):
    """The marker bytes are not a JSON object."""


def parse_marker(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MarkerError("comfy_quant is not JSON") from None
    if not isinstance(doc, dict):
        raise MarkerError("comfy_quant is not a JSON object")
    return doc


def encode_marker(doc: dict, size: int) -> bytes:
    """JSON bytes of exactly `size` bytes (space padded); MarkerError if they do not fit."""
    try:
        raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise MarkerError("comfy_quant cannot be written back as JSON") from None
    if len(raw) > size:
        raise MarkerError(f"comfy_quant JSON needs {len(raw)} bytes once rewritten, {size} reserved")
    return raw + b" " * (size - len(raw))


def is_weight_only(doc: dict) -> bool:
    return doc.get(WEIGHT_ONLY_FLAG) is True


def with_weight_only(doc: dict, weight_only: bool) -> dict:
    """A copy of the marker with the weight-only flag set or removed."""
    out = {k: v for k, v in doc.items() if k != WEIGHT_ONLY_FLAG}
    if weight_only:
        out[WEIGHT_ONLY_FLAG] = True
    return out
