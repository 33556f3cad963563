"""Reading a checkpoint from object storage as one sequential stream, or by positioned reads.

The rewrite reads its input once, front to back (`io.reader.TensorStream`); a remote object is
read the same way, in ranged GETs of READ_BLOCK bytes through fsspec's read-ahead cache, so
memory stays at the local bound plus about two blocks. s3fs's default (50 MB blocks) is sized
down here. s3fs also sends `If-Match: <ETag>` with every range, so an object replaced while it
is read fails the run instead of mixing two versions.

What reads tensors by name (the forward pass, `inspect`, the self-check of `verify`) gets
`open_remote_file` instead: no read-ahead cache, so each positioned read is one ranged GET of
exactly the bytes asked for (pinned the same way), and the object's size is known.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from fp8stream.errors import FP8StreamError, InvalidCheckpointError
from fp8stream.io.storage import scheme_of
from fp8stream.remote import filesystem

READ_BLOCK = 8 << 20

# url -> ETag or version the listing saw (the zoo pins each input to what it listed).
_pins: dict[str, str] = {}


def pin(url: str, tag: str | None) -> None:
    """Refuse to read `url` unless its ETag (or version id) is still `tag`."""
    if tag:
        _pins[url] = tag
    else:
        _pins.pop(url, None)


class RemoteStream:
    """A remote file object whose errors are all OSError, as the reader expects of a file:
    a dropped connection or an expired credential becomes a one-line read error."""

    def __init__(self, f: Any, label: str, size: int) -> None:
        self._f = f
        self.label = label
        self.size = size  # the object's size (the stream's reader does not rely on it)
        self._pos = f.tell()
        self._lock = threading.Lock()  # read_at: one seek+read at a time (the forward pass reads on threads)

    def read(self, n: int = -1) -> bytes:
        # Our own position: fsspec's memory store hands every open() of an object the same file
        # object, so the stream and the forward pass's positioned reads would move each other.
        try:
            if self._f.tell() != self._pos:
                self._f.seek(self._pos)
            data = self._f.read(n)
        except OSError:
            raise
        except Exception as e:  # botocore/aiohttp errors are not OSError
            raise OSError(f"{type(e).__name__}: {e}".splitlines()[0]) from None
        self._pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        memoryview(buf)[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        else:  # relative to our position or the end: the file's seek, from our position
            self._f.seek(self._pos)
            self._pos = self._f.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read_at(self, offset: int, n: int) -> bytes:
        """A positioned read (one ranged GET): for methods that need random access. Safe from
        several threads (the forward pass's read-ahead): the seek and the read go together."""
        with self._lock:
            self.seek(offset)
            return self.read(n)

    def close(self) -> None:
        try:
            self._f.close()
        except Exception:  # closing a read handle has nothing to lose
            pass


def object_info(url: str) -> dict[str, Any]:
    """The store's record of an object: size, ETag, version id (what the zoo lists)."""
    fs, path = filesystem(url)
    with _store_errors(url, "cannot read"):
        info = fs.info(path)
    if info.get("type") == "directory":
        raise FP8StreamError(f"{url}: is a folder, not a safetensors file")
    return info


def identity_tag(info: dict[str, Any]) -> str | None:
    """What tells one version of an object from the next: its version id or ETag, or on a
    store with neither (file://, memory://) its modification time."""
    tag = info.get("VersionId") or info.get("ETag") or info.get("etag")
    if tag:
        return str(tag)
    stamp = info.get("mtime") or info.get("created")
    return f"mtime:{stamp}" if stamp is not None else None


def open_remote_stream(url: str) -> RemoteStream:
    """An fsspec URL opened for one sequential pass. The reader treats it as having no size,
    like a pipe: the end of the data is checked by reading past it."""
    return _open(url, "readahead")


def open_remote_file(url: str) -> RemoteStream:
    """An fsspec URL opened for positioned reads (`read_at`, or seek and read): one ranged
    request per read, nothing cached; `size` is the object's."""
    return _open(url, "none")


def _open(url: str, cache: str) -> RemoteStream:
    fs, path = filesystem(url)
    info = object_info(url)
    expected = _pins.get(url)
    if expected is not None and identity_tag(info) != expected:
        raise InvalidCheckpointError(f"{url}: changed since it was listed (was {expected}, now {identity_tag(info)})")
    kwargs: dict[str, Any] = {"block_size": READ_BLOCK}
    if scheme_of(url) in ("s3", "s3a"):
        kwargs["cache_type"] = cache
    with _store_errors(url, "cannot open"):
        f = fs.open(path, "rb", **kwargs)
    return RemoteStream(f, url, int(info.get("size") or 0))


@contextlib.contextmanager
def _store_errors(url: str, verb: str) -> Iterator[None]:
    """A store's exceptions as one line a user can act on."""
    try:
        yield
    except FileNotFoundError:
        raise FP8StreamError(f"{url}: no such object") from None
    except PermissionError:
        raise FP8StreamError(f"{url}: permission denied") from None
    except FP8StreamError:
        raise
    except Exception as e:
        raise FP8StreamError(f"{url}: {verb} ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0]
