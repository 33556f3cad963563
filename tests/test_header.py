"""The header validator refuses every malformed header with InvalidCheckpointError."""

from __future__ import annotations

import io
import json
import struct

import pytest

from fp8stream.errors import InvalidCheckpointError
from fp8stream.io.header import OutputEntry, encode_header, parse_header, read_header


def blob(doc: object, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(doc).encode()
    return struct.pack("<Q", len(text)) + text


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_round_trip_of_our_own_header() -> None:
    entries = [OutputEntry("a", "F32", (2, 3), 24), OutputEntry("b", "F8_E4M3", (4,), 4),
               OutputEntry("c", "F4", (3, 2), 3)]
    raw, infos = encode_header(entries, {"k": "v"})
    assert (len(raw) - 8) % 8 == 0  # padded so the data starts 8-byte aligned
    header = read_header(io.BytesIO(raw + bytes(31)), len(raw) + 31)
    assert [t.name for t in header.tensors] == ["a", "b", "c"]
    assert header.metadata == {"k": "v"}
    assert header.by_name["c"].nbytes == 3  # F4 is sized in bits: 6 values, 3 bytes


def test_tensors_are_put_in_data_order() -> None:
    doc = {"z": entry("U8", [2], 0, 2), "a": entry("U8", [1], 2, 3)}
    header = parse_header(json.dumps(doc).encode(), 3)
    assert [t.name for t in header.tensors] == ["z", "a"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"a": ' + json.dumps(entry("U8", [1], 0, 1)).encode()
         + b', "a": ' + json.dumps(entry("U8", [1], 1, 2)).encode() + b"}", "twice"),
        (json.dumps({"a": entry("U9", [1], 0, 1)}).encode(), "unknown dtype"),
        (json.dumps({"a": entry("F32", [2], 0, 4)}).encode(), "does not fill"),
        (json.dumps({"a": entry("F32", [-1], 0, 4)}).encode(), "non-negative"),
        (json.dumps({"a": entry("F32", [2**62, 2**62], 0, 4)}).encode(), "does not fill"),
        (json.dumps({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 1, 3)}).encode(), "overlaps"),
        (json.dumps({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 3, 5)}).encode(), "gap"),
        (json.dumps({"a": entry("U8", [2], 2, 0)}).encode(), "end before"),
        (json.dumps({"a": entry("F4", [3], 0, 2)}).encode(), "does not fill"),
        (json.dumps({"a": {"dtype": "U8", "shape": [1]}}).encode(), "exactly"),
        (json.dumps({"__metadata__": {"k": 1}}).encode(), "strings"),
        (json.dumps([1, 2]).encode(), "JSON object"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (json.dumps({"a": entry("U8", [True], 0, 1)}).encode(), "non-negative"),
        (json.dumps({"\ud800": entry("U8", [1], 0, 1)}).encode(), "not valid Unicode"),
        (json.dumps({"__metadata__": {"k": "\udfff"}}).encode(), "not valid Unicode"),
    ],
)
def test_malformed_headers_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidCheckpointError, match=message):
        parse_header(raw)


def test_header_length_over_100_mb_is_refused_before_reading() -> None:
    with pytest.raises(InvalidCheckpointError, match="over 100 MB"):
        read_header(io.BytesIO(struct.pack("<Q", 100_000_001) + b"{}"))


def test_header_longer_than_the_file_is_refused() -> None:
    with pytest.raises(InvalidCheckpointError, match="larger than the file"):
        read_header(io.BytesIO(struct.pack("<Q", 1000) + b"{}"), 10)


def test_data_size_must_match_the_file() -> None:
    raw = blob({"a": entry("U8", [4], 0, 4)})
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        read_header(io.BytesIO(raw + b"ab"), len(raw) + 2)
    with pytest.raises(InvalidCheckpointError, match="holds"):
        read_header(io.BytesIO(raw + b"abcdef"), len(raw) + 6)


def test_short_file_is_not_safetensors() -> None:
    with pytest.raises(InvalidCheckpointError, match="shorter than 8 bytes"):
        read_header(io.BytesIO(b"abc"))
