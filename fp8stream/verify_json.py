"""JSON comparisons for `verify`: markers and `_quantization_metadata` judged by what they say,
not their bytes (the weight-only flag may be set or removed, padding added)."""

from __future__ import annotations

import json

from fp8stream.formats.comfy_quant import WEIGHT_ONLY_FLAG


def without_weight_only(doc: object) -> object:
    """The JSON with every weight-only flag removed, at any depth."""
    if isinstance(doc, dict):
        return {k: without_weight_only(v) for k, v in doc.items() if k != WEIGHT_ONLY_FLAG}
    if isinstance(doc, list):
        return [without_weight_only(v) for v in doc]
    return doc


def json_or_none(raw: bytes | str | None) -> object:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def quantization_metadata_compatible(a: object, b: object) -> bool:
    """Equal but for weight-only flags and layers added (ComfyUI rebuilds markers from it)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    a, b = without_weight_only(a), without_weight_only(b)
    layers_a, layers_b = a.pop("layers", {}), b.pop("layers", {})
    if a != b or not (isinstance(layers_a, dict) and isinstance(layers_b, dict)):
        return False
    return all(layers_b.get(name) == doc for name, doc in layers_a.items())
