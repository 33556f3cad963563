"""Where a checkpoint goes: a file that appears complete or not at all, or stdout; zstd optional.

A file output goes through `io.atomic` (temp file, fsync, rename). stdout cannot be renamed
into place: on failure we stop writing and the command exits non-zero, so the next command in
the pipe can tell. The reader of a stream can tell too: the safetensors header gives every
tensor's size, so a stream that ends early is visibly short.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from fp8stream.errors import OutputError, UsageError
from fp8stream.io.atomic import AtomicOutput, describe_os_error
from fp8stream.io.compression import ZstdSettings, ZstdWriter
from fp8stream.remote import is_remote

STDOUT_LABEL = "<stdout>"


def _remote_output(target: str, compressed: bool) -> "AtomicOutput":
    """An fsspec URL: an upload published only after the self-check (docs/remote.md)."""
    from fp8stream.remote.output import RemoteOutput
    return RemoteOutput(target, compressed)  # type: ignore[return-value]


class _CountingWriter:
    """Passes writes on to `sink` and counts the bytes (what actually left, after compression)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self.sink.write(data)
        self.count += len(data)
        return n if n is not None else len(data)

    def flush(self) -> None:
        self.sink.flush()


class OutputSink:
    """Context manager giving a writable stream; `complete()` is called once all data is out.

    `readback` is a path the finished (but not yet published) output can be re-read from, or
    None for stdout. `bytes_written` counts what left after compression.
    """

    def __init__(self, target: str, zstd: ZstdSettings | None, final: bool = True) -> None:
        """`final`: False for a file inside a folder renamed into place later (a shard)."""
        self.target = target
        self.zstd = zstd
        self.label = STDOUT_LABEL if target == "-" else target
        if target == "-":
            self._atomic = None
        else:
            self._atomic = (_remote_output(target, zstd is not None) if is_remote(target)
                            else AtomicOutput(target, final))
        self._counter: _CountingWriter | None = None
        self._compressor: ZstdWriter | None = None
        self._raw: BinaryIO | None = None

    @property
    def readback(self) -> str | None:
        return self._atomic.temp if self._atomic else None

    @property
    def bytes_written(self) -> int:
        return self._counter.count if self._counter else 0

    def __enter__(self) -> BinaryIO:
        if self._atomic is None:
            if os.isatty(sys.stdout.fileno()):
                raise UsageError("refusing to write a checkpoint to a terminal: redirect stdout or name OUT")
            self._raw = open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)
        else:
            self._raw = self._atomic.__enter__()
        try:
            self._counter = _CountingWriter(self._raw)
            if self.zstd is not None:
                self._compressor = ZstdWriter(self._counter, self.zstd)
                return self._compressor  # type: ignore[return-value]
            return self._counter  # type: ignore[return-value]
        except BaseException:  # a signal here skips __exit__: clean up as it would
            self.__exit__(*sys.exc_info())
            raise

    def complete(self) -> None:
        """End the zstd frame and flush, so that `readback` holds the whole output."""
        try:
            if self._compressor is not None:
                self._compressor.close()
            assert self._raw is not None
            self._raw.flush()
        except OSError as e:
            raise self._describe(e) from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, tb)
            return
        if exc_type is None:
            return
        # stdout: nothing can be taken back; stop writing. Drop what is buffered so that the
        # interpreter's exit does not write (or fail on) it, and report a closed pipe clearly.
        _silence_stdout()
        if isinstance(exc, OSError):
            raise self._describe(exc) from None

    def _describe(self, e: OSError) -> OutputError:
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
            return OutputError(f"{STDOUT_LABEL}: the reading end of the pipe closed")
        return describe_os_error(self.label, e)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: later flushes at exit neither write nor raise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


def check_output_name(target: str, zstd_requested: bool, compress: bool) -> None:
    """A named output compressed by --zstd must say so by its name."""
    if zstd_requested and target != "-" and not compress:
        raise UsageError(f"{target}: --zstd compresses stdout and --out-dir outputs; name OUT *.zst to compress it "
                         "(compressed input is detected by itself)")
