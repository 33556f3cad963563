"""Where a checkpoint goes: a file that appears complete or not at all, or stdout; zstd optional.

A file output goes through `io.atomic` (temp file, fsync, rename), a URL through an upload
(remote/), both given by the output's Location (io.storage). stdout cannot be renamed
into place: on failure we stop writing and the command exits non-zero, so the next command in
the pipe can tell. The reader of a stream can tell too: the safetensors header gives every
tensor's size, so a stream that ends early is visibly short.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO, Protocol

from fp8stream.errors import OutputError, UsageError
from fp8stream.io.atomic import describe_os_error
from fp8stream.io.compression import ZstdSettings, ZstdWriter

STDOUT_LABEL = "<stdout>"


class AtomicTarget(Protocol):
    """A file object (`__enter__`) that becomes its target only if the block succeeds: a file
    renamed into place (io.atomic), an upload published (remote/), or stdout, which cannot be
    taken back. `temp`: where the finished output can be re-read before it is published (the
    self-check), or None."""

    @property
    def temp(self) -> str | None: ...
    def __enter__(self) -> BinaryIO: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


class PositionedTarget(AtomicTarget, Protocol):
    """`positioned`: the file object is a local file that may be written at fixed places
    (io/placed.py) instead of front to back; False for stdout and an upload."""

    positioned: bool


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

    def __init__(self, label: str, target: PositionedTarget, zstd: ZstdSettings | None) -> None:
        """`target`: the output's file object, given by its Location (io.storage)."""
        self.label = label
        self.zstd = zstd
        self._target = target
        self._counter: _CountingWriter | None = None
        self._compressor: ZstdWriter | None = None
        self._raw: BinaryIO | None = None

    @property
    def readback(self) -> str | None:
        return self._target.temp

    @property
    def bytes_written(self) -> int:
        return self._counter.count if self._counter else 0

    def file_descriptor(self) -> int | None:
        """The open output file, for writes at fixed places (io/placed.py), or None where the
        output is a stream: stdout, an upload, zstd. Such writes are counted by `placed`."""
        if self.zstd is not None or self._raw is None or not self._target.positioned:
            return None
        return self._raw.fileno()

    def placed(self, nbytes: int) -> None:
        """Count bytes written at fixed places on `file_descriptor`."""
        assert self._counter is not None
        self._counter.count += nbytes

    def __enter__(self) -> BinaryIO:
        self._raw = self._target.__enter__()
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
            raise _describe(self.label, e) from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._target.__exit__(exc_type, exc, tb)


class StdoutTarget:
    """The `AtomicTarget` of '-': nothing can be taken back, so on failure we stop writing and
    the command exits non-zero. There is nothing to re-read (`temp` is None); it is written
    front to back (`positioned` False: a pipe or a terminal cannot be written at places)."""

    temp = None
    positioned = False

    def __enter__(self) -> BinaryIO:
        if os.isatty(sys.stdout.fileno()):
            raise UsageError("refusing to write a checkpoint to a terminal: redirect stdout or name OUT")
        return open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            return
        # Drop what is buffered so that the interpreter's exit does not write (or fail on) it,
        # and report a closed pipe clearly.
        _silence_stdout()
        if isinstance(exc, OSError):
            raise _describe(STDOUT_LABEL, exc) from None


def _describe(label: str, e: OSError) -> OutputError:
    if isinstance(e, BrokenPipeError):
        _silence_stdout()
        return OutputError(f"{STDOUT_LABEL}: the reading end of the pipe closed")
    return describe_os_error(label, e)


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
