"""Folder questions about URLs, so a sharded checkpoint can live in a store: `s3://b/model/`
holding `*.safetensors` and its `*.safetensors.index.json` (formats.shards asks them of the
index's Location, remote.location).

An object store has no folders; a "folder" is a key prefix, and `s3://b/model` and
`s3://b/model/` name the same one.
"""

from __future__ import annotations

from fp8stream.errors import InvalidCheckpointError
from fp8stream.remote import filesystem
from fp8stream.remote.input import _store_errors


def is_dir(url: str) -> bool:
    fs, path = filesystem(url)
    with _store_errors(url, "cannot list"):
        return bool(fs.isdir(path.rstrip("/")))


def is_file(url: str) -> bool:
    fs, path = filesystem(url)
    with _store_errors(url, "cannot read"):
        return bool(fs.isfile(path))


def names_in(url: str) -> list[str]:
    """The names of the objects directly under the prefix `url`."""
    fs, path = filesystem(url)
    with _store_errors(url, "cannot list"):
        found = fs.ls(path.rstrip("/"), detail=False, refresh=True)
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)


def read_small(url: str, limit: int) -> bytes:
    """A small object's bytes (an index), refused above `limit` bytes."""
    fs, path = filesystem(url)
    with _store_errors(url, "cannot read"):
        size = fs.size(path)
        if size is not None and size > limit:
            raise InvalidCheckpointError(f"{url}: index is over {limit // 1_000_000} MB")
        return fs.cat_file(path)
