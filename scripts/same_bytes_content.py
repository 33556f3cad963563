"""`same_bytes.py compare --kept A B`: for the cases whose outputs differ byte for byte, whether
they differ only in where things sit (the header's padding, markers' trailing spaces, offsets):
the same tensors with the same dtype, shape and bytes, each comfy_quant marker the same JSON,
the same metadata (JSON values parsed), a sharded output's index the same but for its
total_size, and records equal once output digests (and the digests and scales `run` records
per output) and sizes are masked: the values are compared on the files themselves. Standalone:
reads the kept files (`run --keep`) with json and struct only (zstd outputs through the
zstandard module: run it with the project's Python)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

SIZE = re.compile(r"\b\d+(?:\.\d+)? ?(?:[KMGT]i?B|B|bytes)\b")
SIZE_KEYS = ("bytes_out", "bytes_written")  # report keys that count output bytes
MARKER = ".comfy_quant"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _masked(value: object) -> object:
    """A record with output digests and byte counts taken out (they differ by the padding)."""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items() if k not in SIZE_KEYS and k not in ("outputs", "tensors")}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str):
        return SIZE.sub("<size>", value)
    return value


def _load(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    if raw[:4] == ZSTD_MAGIC:
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tensors(path: Path) -> tuple[dict, dict]:
    """(metadata with JSON values parsed, name -> (dtype, shape, bytes), markers as parsed JSON)."""
    header, data = _load(path)
    metadata = {k: _json_or_text(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        blob = data[begin:end]
        if name.endswith(MARKER):
            tensors[name] = ("marker", json.loads(blob.decode("utf-8")))
        else:
            tensors[name] = (entry["dtype"], entry["shape"], blob)
    return metadata, tensors


def same_content(a: Path, b: Path) -> str | None:
    """None where the two checkpoints hold the same tensors and values, else what differs."""
    if a.name.endswith(".json") or b.name.endswith(".json"):  # a sharded output's index: its total_size aside
        index_a, index_b = (json.loads(p.read_text()) for p in (a, b))
        for index in (index_a, index_b):
            index.get("metadata", {}).pop("total_size", None)
        return None if index_a == index_b else "index differs"
    (meta_a, ta), (meta_b, tb) = _tensors(a), _tensors(b)
    if meta_a != meta_b:
        return f"metadata differs: {sorted(k for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k))}"
    if set(ta) != set(tb):
        return f"tensors differ: {sorted(set(ta) ^ set(tb))[:5]}"
    changed = [name for name in ta if ta[name] != tb[name]]
    return f"values differ: {changed[:5]}" if changed else None


def compare_kept(record_a: dict, record_b: dict, kept_a: Path, kept_b: Path) -> str | None:
    """None where two records of a case differ only in layout, else why not."""
    if _masked(record_a) != _masked(record_b):
        return "the records differ beyond output sizes"
    if set(record_a["outputs"]) != set(record_b["outputs"]):
        return "different output files"
    for name in sorted(record_a["outputs"]):
        if record_a["outputs"][name] == record_b["outputs"][name]:
            continue
        why = same_content(kept_a / name, kept_b / name)
        if why:
            return f"{name}: {why}"
    return None
