"""Where bytes come from and go to: a local path (a file, a FIFO, a folder), '-' (stdin, stdout)
or a URL (s3://, hf://, ... through fsspec). This is the seam between the tool and its storage.

`locate(path)` is the one place that tells them apart: it turns a path as the user gave it into
a `Location`, and the reader, the writers and the index reader only ask that Location. URLs are
opened by what the entry points register with `open_urls_with` (remote/, whose fsspec code is
imported by nothing below them), so io/ and the stages above it never know a store.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, NamedTuple, Protocol

from fp8stream.errors import FP8StreamError, InvalidCheckpointError, UsageError
from fp8stream.io.atomic import AtomicOutput, check_free_space, check_output_folder, check_output_path
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.sharded import ShardedOutput
from fp8stream.io.sink import STDOUT_LABEL, OutputSink, StdoutTarget

if TYPE_CHECKING:
    from fp8stream.io.overlap import ChunkReader

_URL_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+)://")


def is_remote(path: str | None) -> bool:
    """Whether a CLI path is an fsspec URL rather than a local path or '-'."""
    return path is not None and _URL_RE.match(path) is not None


def scheme_of(url: str) -> str:
    """A URL's scheme, lower case; "file" for a local path."""
    m = _URL_RE.match(url)
    return m.group("scheme").lower() if m else "file"


@dataclass
class InputSource:
    """An opened input: a binary stream of safetensors bytes, their size when known (plain
    files, not pipes or zstd), a label, the path it was opened by (None for stdin), and the
    file object to close. `read_at`: a URL's positioned reads (one ranged request each); a
    file is read by its descriptor instead."""

    stream: BinaryIO
    size: int | None
    label: str
    path: str | None
    raw: BinaryIO | None = None  # the underlying file when `stream` decompresses it
    compressed: bool = False
    readahead: ChunkReader | None = None
    read_at: Callable[[int, int], bytes] | None = None

    def close(self) -> None:
        if self.readahead is not None:
            self.readahead.close()
        if self.compressed:
            self.stream.close()
        if self.path is not None:
            (self.raw or self.stream).close()


class Stored(NamedTuple):
    size: int  # bytes in the store (the compressed size for zstd)
    tag: str | None  # what tells one version from the next: version id, ETag, or mtime


class FolderTarget(Protocol):
    """A sharded output (one file's is io.sink's `AtomicTarget`): `open(shard)` per shard,
    `finalize(index, blob)` once all are written; it appears complete or not at all when the
    block ends."""

    sinks: dict[str, OutputSink]

    def __enter__(self) -> FolderTarget: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool | None: ...
    def open(self, shard: str) -> tuple[OutputSink, BinaryIO]: ...
    def finalize(self, index_name: str, blob: bytes) -> None: ...


class Location(Protocol):
    """A path as the user gave it (`path`), and what can be done there. `local_path`: the path on
    this machine's file system (None for a URL or '-')."""

    path: str
    local_path: str | None

    def open_stream(self) -> InputSource: ...  # one pass, front to back (the rewrite)
    def open_ranged(self) -> InputSource: ...  # positioned reads (inspect, verify, the forward pass)
    def stored(self) -> Stored: ...
    def is_file(self) -> bool: ...
    def is_dir(self) -> bool: ...
    def names(self) -> list[str]: ...  # a folder's entries
    def files_present(self, names: Iterable[str]) -> set[str]: ...  # which of these files the folder holds
    def child(self, name: str) -> str: ...
    def parent(self) -> str: ...
    def read_small(self, limit: int) -> bytes: ...  # an index, refused above `limit` bytes
    def check_target(self, input_path: str | None, force: bool) -> None: ...
    def check_folder_target(self, input_folder: str, force: bool) -> None: ...
    def reserve(self, nbytes: int) -> None: ...  # the free space (a store: the upload's part size)
    def open_sink(self, zstd: ZstdSettings | None) -> OutputSink: ...
    def open_folder_target(self, input_folder: str, force: bool, zstd: ZstdSettings | None) -> FolderTarget: ...


_url_opener: Callable[[str], Location] | None = None


def open_urls_with(opener: Callable[[str], Location]) -> None:
    """How URLs are opened: called by the entry points with remote/'s `UrlLocation`."""
    global _url_opener
    _url_opener = opener


def locate(path: str) -> Location:
    """The Location a CLI path names: '-' is stdin/stdout, a URL goes to the store, else a local path."""
    if path == "-":
        return STDIO
    if is_remote(path):
        if _url_opener is None:
            raise UsageError(f"{path}: remote paths need fsspec: pip install 'fp8stream[remote]'")
        return _url_opener(path)
    return LocalPath(path)


class LocalPath:
    """A file, FIFO or folder of this machine. Outputs go through io.atomic (temp, fsync, rename)."""

    def __init__(self, path: str) -> None:
        self.local_path = self.path = path

    def open_stream(self) -> InputSource:
        path = self.path
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a folder, not a safetensors file")
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise FP8StreamError(f"{path}: no such file") from None
        except PermissionError:
            raise FP8StreamError(f"{path}: permission denied") from None
        except OSError as e:
            raise FP8StreamError(f"{path}: cannot open ({e.strerror})") from None
        st = os.fstat(f.fileno())
        # A FIFO or a /dev/fd/N pipe has no size: read it as a stream, like stdin.
        return InputSource(f, st.st_size if stat.S_ISREG(st.st_mode) else None, path, path)

    def open_ranged(self) -> InputSource:
        return self.open_stream()  # pread on the descriptor (io.reader.LazyFile)

    def stored(self) -> Stored:
        st = os.stat(self.path)
        return Stored(st.st_size, f"mtime:{st.st_mtime_ns}")

    def is_file(self) -> bool:
        return os.path.isfile(self.path)

    def is_dir(self) -> bool:
        return os.path.isdir(self.path)

    def names(self) -> list[str]:
        return os.listdir(self.path)

    def files_present(self, names: Iterable[str]) -> set[str]:
        return {name for name in names if os.path.isfile(os.path.join(self.path, name))}

    def child(self, name: str) -> str:
        return os.path.join(self.path, name)

    def parent(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def read_small(self, limit: int) -> bytes:
        if os.path.getsize(self.path) > limit:
            raise InvalidCheckpointError(f"{self.path}: index is over {limit // 1_000_000} MB")
        with open(self.path, "rb") as f:
            return f.read()

    def check_target(self, input_path: str | None, force: bool) -> None:
        check_output_path(self.path, input_path, force)

    def check_folder_target(self, input_folder: str, force: bool) -> None:
        check_output_folder(self.path, input_folder, force)

    def reserve(self, nbytes: int) -> None:
        check_free_space(self.path, nbytes)

    def open_sink(self, zstd: ZstdSettings | None) -> OutputSink:
        return OutputSink(self.path, AtomicOutput(self.path), zstd)

    def open_folder_target(self, input_folder: str, force: bool, zstd: ZstdSettings | None) -> FolderTarget:
        return ShardedOutput(self.path, input_folder, force, zstd)


# a sharded model's output is a folder of shards plus its index: a stream cannot hold it
SHARDS_TO_STDOUT = "a sharded model is written as a folder of shards, not to stdout: name an output folder"


class Stdio:
    """'-': stdin to read, stdout to write. It is no folder, holds no file and has nothing to
    check or reserve; a command that needs a file says so (io.reader.LazyFile)."""

    path = "-"
    local_path = None

    def open_stream(self) -> InputSource:
        return InputSource(sys.stdin.buffer, None, "<stdin>", None)

    def open_ranged(self) -> InputSource:
        return self.open_stream()

    def stored(self) -> Stored:
        raise UsageError("'-' is a stream: it has no stored size")

    def is_file(self) -> bool:
        return False

    def is_dir(self) -> bool:
        return False

    def names(self) -> list[str]:
        return []

    def files_present(self, names: Iterable[str]) -> set[str]:
        return set()

    def child(self, name: str) -> str:
        raise UsageError("'-' is a stream, not a folder")

    def parent(self) -> str:
        raise UsageError("'-' is a stream, not a file in a folder")

    def read_small(self, limit: int) -> bytes:
        raise UsageError("'-' is a stream, not an index")

    def check_target(self, input_path: str | None, force: bool) -> None:
        return None

    def check_folder_target(self, input_folder: str, force: bool) -> None:
        raise UsageError(SHARDS_TO_STDOUT)

    def reserve(self, nbytes: int) -> None:
        return None

    def open_sink(self, zstd: ZstdSettings | None) -> OutputSink:
        return OutputSink(STDOUT_LABEL, StdoutTarget(), zstd)

    def open_folder_target(self, input_folder: str, force: bool, zstd: ZstdSettings | None) -> FolderTarget:
        raise UsageError(SHARDS_TO_STDOUT)


STDIO = Stdio()
