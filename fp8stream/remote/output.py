"""An object that appears complete or not at all, on stores that have no rename.

With s3fs the output is a multipart upload opened with `autocommit=False`: parts go up as the
rewrite writes, and the object exists only once `commit()` completes the upload, which happens
in `__exit__` after the rewrite's self-check (it runs inside the `OutputSink` block, on the
`readback` shadow below). Any failure or signal calls `discard()`, which aborts the upload. A
`with fs.open(..., "wb")` block is never used: its exit would commit a partial object. Without
--force the commit is create-exclusive (`If-None-Match: *`). A run killed with SIGKILL leaves an
incomplete upload (invisible, but billed): the next run writing the same key aborts it.

The self-check reads the written header and every scale back. The object cannot be read before
it is committed, so a sparse local shadow holds what the check reads: the header, and the last
SHADOW_TAIL bytes (where the tail section of scales and markers lies); holes cost no disk.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO

from fp8stream.errors import FP8StreamError, OutputError, UsageError
from fp8stream.io.overlap import WriteBehind
from fp8stream.io.storage import scheme_of
from fp8stream.remote import filesystem
from fp8stream.remote.stores import (
    abort_stale_uploads,
    exists,
    is_s3,
    open_unpublished,
    part_size,
    publish_exclusive_error,
    write_record,
)

SHADOW_TAIL = 8 << 20

# Planned output sizes (set by the free-space check, which knows it) and object metadata to
# record (set by the zoo: the input identity), by target URL.
_sizes: dict[str, int] = {}
_metadata: dict[str, dict[str, str]] = {}


def expect_size(url: str, nbytes: int | None) -> None:
    if nbytes is None:
        _sizes.pop(url, None)
    else:
        _sizes[url] = nbytes


def record_metadata(url: str, metadata: dict[str, str] | None) -> None:
    """What to record on the object `url` (a sharded output's folder: on its index)."""
    if metadata is None:
        _metadata.pop(url.rstrip("/"), None)
    else:
        _metadata[url.rstrip("/")] = metadata


def metadata_for(url: str) -> dict[str, str] | None:
    return _metadata.get(url.rstrip("/"))


def check_remote_output(output: str, input_path: str | None, force: bool) -> None:
    """What check_output_path does for files: not the input, not existing without --force."""
    if input_path is not None and input_path == output:
        raise UsageError(f"{output}: output is the input; choose another output path")
    fs, path = filesystem(output)
    if exists(fs, path, output) and not force:
        raise UsageError(f"{output}: exists (use --force to replace it)")


def check_remote_folder(output: str, input_folder: str, force: bool) -> None:
    """Not the input's folder; nothing under the prefix unless --force."""
    if output.rstrip("/") == input_folder.rstrip("/"):
        raise UsageError(f"{output}: output is the input folder; choose another folder")
    if _listing(output) and not force:
        raise UsageError(f"{output}: exists (use --force to replace it)")


def _listing(folder: str) -> list[str]:
    fs, path = filesystem(folder)
    try:
        fs.invalidate_cache(path.rstrip("/"))
        return list(fs.find(path.rstrip("/")))
    except FileNotFoundError:
        return []
    except Exception as e:
        raise FP8StreamError(f"{folder}: cannot reach the store ({_first_line(e)})") from None


class _Recorder:
    """Passes writes to the upload, keeping the header and the last SHADOW_TAIL bytes."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pos = 0
        self.head = bytearray()
        self.head_len: int | None = None
        self.tail = bytearray()
        self.abandoned = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.head_len is None or len(self.head) < self.head_len:
            need = (8 if self.head_len is None else self.head_len) - len(self.head)
            self.head += view[:need]
            if self.head_len is None and len(self.head) >= 8:
                self.head_len = 8 + int.from_bytes(self.head[:8], "little")
                self.head += view[need:need + self.head_len - len(self.head)]
        self.tail += view[-SHADOW_TAIL:]
        if len(self.tail) > SHADOW_TAIL:
            del self.tail[:len(self.tail) - SHADOW_TAIL]
        try:
            self.f.write(view)
        except OSError:
            raise
        except Exception as e:  # botocore errors are not OSError: make them one
            raise OSError(f"{type(e).__name__}: {e}".splitlines()[0]) from None
        self.pos += len(view)
        return len(view)

    def flush(self) -> None:
        pass  # the upload flushes at part boundaries; the last part goes at close

    def fileno(self) -> int:
        raise OSError("a remote output has no file descriptor")

    def close(self) -> None:
        if not self.abandoned:  # closing sends the last part: pointless when discarding
            self.f.close()

    def write_shadow(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.head)
            f.truncate(self.pos)
            f.seek(max(self.pos - len(self.tail), 0))
            f.write(self.tail)


class RemoteOutput:
    """The `io.sink.AtomicTarget` of a URL: `__enter__` gives a file object, the object appears only if
    the block succeeds. `temp` is the shadow the self-check reads; None for zstd output, whose
    check is skipped (as for stdout): a reader verifies the frame's checksum. An upload goes
    front to back (`positioned` False)."""

    positioned = False

    def __init__(self, target: str, compressed: bool = False) -> None:
        self.target = target
        self.compressed = compressed  # a zstd frame cannot be checked from its head and tail
        self.fs, self.path = filesystem(target)
        self.exclusive = True
        self.file: WriteBehind | None = None
        self._recorder: _Recorder | None = None
        self._raw: Any = None
        self._shadow: str | None = None

    @property
    def temp(self) -> str | None:
        """The shadow the self-check reads. `OutputSink.readback` asks for it after
        `complete()`, when every byte has been written: that is when the upload's last part
        goes up (the object is still unpublished)."""
        if self._shadow is None and self.file is not None:
            self.close_upload()
        return None if self.compressed else self._shadow

    def __enter__(self) -> BinaryIO:
        abort_stale_uploads(self.fs, self.path)
        self.exclusive = not exists(self.fs, self.path, self.target)
        kwargs: dict[str, Any] = {"autocommit": False}
        if scheme_of(self.target) in ("s3", "s3a"):
            kwargs["block_size"] = part_size(_sizes.get(self.target))
            if metadata_for(self.target) is not None:
                kwargs["Metadata"] = metadata_for(self.target)  # s3fs passes it to the upload
        mode = "xb" if self.exclusive and scheme_of(self.target) in ("s3", "s3a") else "wb"
        try:
            self._raw = open_unpublished(self.fs, self.path, mode, kwargs)
        except Exception as e:
            raise OutputError(f"{self.target}: cannot write ({_first_line(e)})") from None
        self._recorder = _Recorder(self._raw)
        self.file = WriteBehind(self._recorder)  # type: ignore[arg-type]
        return self.file  # type: ignore[return-value]

    def close_upload(self) -> None:
        """All data sent (the last part uploaded), not yet published; the shadow written."""
        assert self.file is not None and self._recorder is not None
        self.file.close()
        fd, self._shadow = tempfile.mkstemp(prefix=".fp8stream-shadow-", suffix=".safetensors")
        os.close(fd)
        self._recorder.write_shadow(self._shadow)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    if self._shadow is None:
                        self.close_upload()
                    record = metadata_for(self.target)
                    if record is not None and not is_s3(self.fs):  # S3: set on the upload
                        write_record(self.fs, self.path, record)
                    self._raw.commit()
                    return
                except Exception as e:
                    self._discard()
                    raise publish_exclusive_error(self.target, e) from None
            self._discard()
            if isinstance(exc, OSError) and not isinstance(exc, (OutputError, UsageError)):
                raise OutputError(f"{self.target}: cannot write ({_first_line(exc)})") from None
        finally:
            self._remove_shadow()

    def _discard(self) -> None:
        if self._recorder is not None:
            self._recorder.abandoned = True
        if self.file is not None:
            try:
                self.file.close(abandon=True)
            except Exception:
                pass
        try:
            self._raw.discard()
        except Exception:
            pass  # a left upload is aborted by the next run for this key

    def _remove_shadow(self) -> None:
        if self._shadow is not None:
            try:
                os.unlink(self._shadow)
            except OSError:
                pass
            self._shadow = None


def _first_line(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0]
