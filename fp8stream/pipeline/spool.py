"""A stream (stdin, a FIFO, a zstd file or stream, a URL) spooled to a temporary file, for a
method that reads tensors by name (the forward pass: before the output header is written, in
execution order).

The safetensors bytes, decompressed, go to `.<OUT name>.spool.fp8stream-PID.tmp` in the
output's folder (for stdout or a URL: in $TMPDIR) while the stream is read, once; then the run
proceeds exactly as for that file (the forward pass and the copy read it; the second touch hits
the page cache), so stdin, zstd and the file give the same bytes. Its size is known from the
header; the free space for it (and, on the same file system, for the output) is checked before
anything is written. It is removed when the run ends, whatever the ending: success, an error, a
signal (SIGTERM and SIGINT unwind through here); a spool left by a killed process (kill -9) has
our temporary name, and the next run in that folder removes it once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from fp8stream.errors import FP8StreamError, InvalidCheckpointError, OutputError
from fp8stream.io.atomic import describe_os_error, remove_stale_temps, temp_path_for
from fp8stream.io.storage import Location, locate
from fp8stream.pipeline.inputs import InputPart, ModelInput
from fp8stream.pipeline.outputs import OutputTarget
from fp8stream.progress import bar as progress_bar

CHUNK_BYTES = 4 << 20


def spool_path(output: Location | None) -> str:
    """Beside a local output file (same disk as the result), else in $TMPDIR."""
    local = _local_output(output)
    if local is not None:
        return temp_path_for(local + ".spool")
    return temp_path_for(os.path.join(tempfile.gettempdir(), "fp8stream-input.spool"))


def _local_output(output: Location | None) -> str | None:
    """The output's path on this machine; None for none, stdout or a URL."""
    return output.local_path if output is not None else None


def _same_disk(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def check_spool_space(path: str, nbytes: int, output: Location | None, output_bytes: int) -> None:
    """The spool must fit, and the output too where both share a file system."""
    folder = os.path.dirname(path)
    local = _local_output(output)
    out_folder = os.path.dirname(os.path.abspath(local)) if local is not None else None
    both = out_folder is not None and _same_disk(folder, out_folder)
    need = nbytes + (output_bytes if both else 0)
    free = shutil.disk_usage(folder).free
    if free < need:
        what = "the spooled input and the output" if both else "the spooled input"
        raise OutputError(f"{folder}: not enough free space for {what} ({free / 1e9:.2f} GB free, {need / 1e9:.2f} GB "
                          "needed); free some space, set TMPDIR, or give --no-spool (no forward pass on a stream)")


def _copy_data(part: InputPart, out, nbytes: int, progress: bool) -> None:
    """The data section: exactly nbytes, then the end of the stream (zstd checks its frame)."""
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    label = part.source.label
    with progress_bar("spooling input", nbytes, "B", progress) as bar:
        left = nbytes
        while left:
            try:
                n = part.source.stream.readinto(view[: min(left, CHUNK_BYTES)])
            except OSError as e:
                raise FP8StreamError(f"{label}: read error ({e.strerror})") from None
            if not n:
                raise InvalidCheckpointError(f"{label}: stream ends inside the data (truncated)")
            out.write(view[:n])
            left -= n
            bar.update(n)
        if part.source.stream.read(1):
            raise InvalidCheckpointError(f"{label}: data continues after the last tensor")


@contextlib.contextmanager
def spooled(model: ModelInput, output: OutputTarget | None, progress: bool) -> Iterator[ModelInput]:
    """The one-file stream `model` as a ModelInput over its spool file, removed on exit;
    `output` None: a run that writes nothing (`check`), the spool in $TMPDIR."""
    part = model.parts[0]
    assert part.head is not None and len(model.parts) == 1
    location = output.location if output is not None else None
    path = spool_path(location)
    remove_stale_temps(os.path.dirname(path))
    out_bytes = 0 if output is None or output.zstd is not None else model.whole.file_bytes  # about the output's size
    check_spool_space(path, part.header.file_bytes, location, out_bytes)
    try:
        try:
            with open(path, "xb") as out:
                out.write(part.head)
                _copy_data(part, out, part.header.data_bytes, progress)
        except OSError as e:
            raise describe_os_error(path, e) from None
        with _spool_input(part, path) as spool:
            yield spool
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _spool_input(part: InputPart, path: str) -> ModelInput:
    """The spool file as the model's one file, opened just after the header: the stream's
    header, already read, is handed on, not read again."""
    location = locate(path)
    source = location.open_stream()
    stack = contextlib.ExitStack()
    stack.callback(source.close)
    source.label = part.source.label  # errors name what the user gave
    source.stream.seek(part.header.data_start)
    return ModelInput([InputPart(part.name, location, source, part.header)], part.header, None, stack)
