"""Random access to a remote input, for methods that need it (the forward-pass method reads
tensors out of order). Two ways, and what each costs:

- `RangedReader`: one ranged GET per positioned read, nothing on disk. Each read pays the
  store's latency (a few ms on S3 in-region, more across regions), so it suits a method that
  reads a few hundred tensors, not millions of small pieces.
- `spooled`: the object copied once to a local temp file in READ_BLOCK pieces (memory stays at
  one block), then read with pread; costs the object's size in local disk and one full extra
  read of the object before the pass, and the file is deleted afterwards.

The rewrite's own pass stays a single sequential stream either way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

from fp8stream.errors import FP8StreamError, OutputError
from fp8stream.remote.input import READ_BLOCK, open_remote_stream


class RangedReader:
    """Positioned reads of a remote object by ranged requests (`read_at(offset, n)`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._stream = open_remote_stream(url)

    def read_at(self, offset: int, n: int) -> bytes:
        try:
            data = self._stream.read_at(offset, n)
        except OSError as e:
            raise FP8StreamError(f"{self.url}: read error ({e})") from None
        if len(data) != n:
            raise FP8StreamError(f"{self.url}: object ends before byte {offset + n}")
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "RangedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def spooled(url: str, folder: str | None = None) -> Iterator[str]:
    """A local copy of `url` for the block, removed afterwards (also on failure or signal)."""
    fd, path = tempfile.mkstemp(prefix=".fp8stream-spool-", suffix=".safetensors", dir=folder)
    try:
        stream = open_remote_stream(url)
        try:
            with os.fdopen(fd, "wb") as f:
                fd = -1
                while chunk := stream.read(READ_BLOCK):
                    f.write(chunk)
        except OSError as e:
            raise OutputError(f"{url}: cannot spool to {path} ({e})") from None
        finally:
            stream.close()
        yield path
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
