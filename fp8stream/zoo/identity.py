"""What makes an output "already done": the identity of its input and the options, recorded in
the output object's metadata (S3 user metadata, x-amz-meta-*), so that a re-run after a crash
redoes only what is missing.

The input is known by its size, ETag or version id and a digest of its header: a digest of the
whole input cannot be had before its data is read, and the header is written before the data.
Stored as object metadata, not in the checkpoint, so zoo outputs stay byte-identical to the
same `fp8stream calibrate` run locally.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from fp8stream import __version__
from fp8stream.remote import filesystem
from fp8stream.remote.stores import read_record

INPUT_KEY = "fp8stream-input"
OPTIONS_KEY = "fp8stream-options"


@dataclass(frozen=True)
class InputIdentity:
    size: int
    tag: str | None  # VersionId, else ETag
    header_sha256: str

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def options_digest(options: dict[str, Any]) -> str:
    """The options that change the output's bytes, and our version (a new version may write
    other bytes), as a short digest."""
    text = json.dumps({"options": options, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def output_metadata(identity: InputIdentity, options: str) -> dict[str, str]:
    return {INPUT_KEY: identity.encode(), OPTIONS_KEY: options}


def recorded(url: str) -> dict[str, str] | None:
    """The output's fp8stream record, or None when it does not exist or has none: S3 user
    metadata, a sidecar object on other stores (remote.stores.write_record says why)."""
    fs, path = filesystem(url)
    meta = read_record(fs, path) or {}
    return {k: v for k, v in meta.items() if k in (INPUT_KEY, OPTIONS_KEY)} or None


def is_done(url: str, identity: InputIdentity, options: str) -> bool:
    meta = recorded(url)
    return meta is not None and meta == output_metadata(identity, options)
