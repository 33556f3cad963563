"""What a file that is not safetensors looks like, from its first bytes, for the error line.

A safetensors file starts with an 8-byte little-endian header length, so a text file, an image
or a JSON config read as one gives a nonsense length (8e18): telling the user "this is a PNG
image" or "this is JSON, not a shard index" says what went wrong.
"""

from __future__ import annotations

import json

SNIFF_BYTES = 4096

# (magic at offset 0, what it is)
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP image or WAV audio)"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.ckpt checkpoint is one)"),
    (b"\x1f\x8b", "gzip data"),
    (b"GGUF", "a GGUF model (llama.cpp), not safetensors"),
    (b"\x89HDF", "an HDF5 file (Keras .h5)"),
)


def _json_kind(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return "JSON text"  # cut off at SNIFF_BYTES, or not quite JSON
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
        return "a shard index (JSON with a weight_map): name it *.safetensors.index.json or give its folder"
    return "JSON text, not a shard index (no weight_map): a config file?"


def describe_bytes(head: bytes) -> str | None:
    """What `head` (a file's first bytes) looks like, or None when it is nothing recognisable."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "a Python pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end is still text
        if e.start < len(head) - 4:
            return None
        text = head[: e.start].decode("utf-8")
    if not text or any(c < " " and c not in "\t\r\n\f" for c in text):
        return None
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("{", "["):
        return _json_kind(stripped)
    return "a text file"
