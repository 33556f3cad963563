"""Output files that appear complete or not at all.

The data goes to a temporary file beside the target, is fsynced, renamed over the target only
on success (`os.replace`, atomic on POSIX and Windows) and the folder is fsynced after. The
temporary name carries our pid, so a later run can remove one left by a killed process, but
never a live run's. On Linux the kernel is asked to start writing each part back as it is
written (`Writeback`), so the final fsync waits for the last part, not the whole file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from typing import BinaryIO

from fp8stream.errors import OutputError, UsageError
from fp8stream.interrupts import committing
from fp8stream.io.overlap import WriteBehind
from fp8stream.io.writeback import Writeback

_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.fp8stream-(?P<pid>\d+)\.tmp$")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporary files (any pid)."""
    return _TEMP_RE.match(name) is not None


def temp_path_for(target: str) -> str:
    folder, base = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{base}.fp8stream-{os.getpid()}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # no signal 0 on Windows: be safe, treat as alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(folder: str) -> list[str]:
    """Temporary files of ours in folder whose process is gone (a killed run's)."""
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [name for name in names if (m := _TEMP_RE.match(name)) and not _pid_alive(int(m.group("pid")))]


def remove_stale_temps(folder: str) -> list[str]:
    """Delete temporary files of ours whose process is gone; returns what was removed."""
    removed = []
    for name in stale_temps(folder):
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def same_file(a: str, b: str) -> bool:
    """True when both paths name one file (same path, symlink or hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(output: str, input_path: str | None, force: bool) -> None:
    """Refuse an output that is the input, exists without --force, or sits in a bad folder.
    (A URL's checks are remote/'s: an object store has no folders to check, docs/remote.md.)"""
    if input_path is not None and (same_file(input_path, output)
                                   or os.path.abspath(input_path) == os.path.abspath(output)):
        raise UsageError(f"{output}: output is the input file; choose another output path")
    if os.path.isdir(output):
        raise UsageError(f"{output}: is a folder; give an output file name")
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output}: exists (use --force to replace it)")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise OutputError(f"{output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: folder {folder} is not writable")


def check_output_folder(output: str, input_folder: str, force: bool) -> None:
    """The checks of check_output_path for a sharded output: a folder that is not the input's."""
    out = os.path.abspath(output)
    if out == os.path.abspath(input_folder) or (os.path.exists(out) and same_file(out, input_folder)):
        raise UsageError(f"{output}: output is the input folder; choose another folder")
    if os.path.lexists(out) and not force:
        raise UsageError(f"{output}: exists (use --force to replace it)")
    if not os.path.isdir(os.path.dirname(out)):
        raise OutputError(f"{output}: folder {os.path.dirname(out)} does not exist")


def check_free_space(output: str, nbytes: int) -> None:
    """Fail before any work when the output's folder cannot hold nbytes more.

    An existing OUT (--force) stays in place until the new file is complete and renamed over
    it, so the disk must hold the old and the new file at once: the old file's space is not
    available, and the whole new size must be free. Stale temporary files of killed runs are
    removed before writing, so their space counts as free. (A store has no free space to ask
    for: there the size sets the upload's part size, remote/.)
    """
    folder = os.path.dirname(os.path.abspath(output))
    reclaimable = 0
    for name in stale_temps(folder):
        try:
            reclaimable += os.lstat(os.path.join(folder, name)).st_blocks * 512
        except OSError:
            pass
    free = shutil.disk_usage(folder).free + reclaimable
    if free < nbytes:
        old = (" (--force keeps the old file until the new one is complete: both must fit)"
               if os.path.lexists(output) else "")
        raise OutputError(
            f"{output}: not enough free space ({free / 1e9:.2f} GB free, {nbytes / 1e9:.2f} GB needed){old}"
        )


def describe_os_error(path: str, e: OSError) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputError(f"{path}: disk full or file too large while writing ({e.strerror})")
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


class AtomicOutput:
    """Context manager: a file object that becomes `target` only if the block succeeds.

    `final`: its rename completes the run (not a shard or index inside a folder renamed later),
    so that a signal arriving after it no longer takes the run back (fp8stream.interrupts).
    `positioned`: the temp file may be written at fixed places (io/placed.py, io/sink.py)."""

    positioned = True

    def __init__(self, target: str, final: bool = True) -> None:
        self.target = target
        self.temp = temp_path_for(target)
        self.final = final
        self.file: WriteBehind | None = None

    def __enter__(self) -> BinaryIO:
        remove_stale_temps(os.path.dirname(self.temp))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd, raw = -1, None
        try:
            # 0o666 and the umask give the permissions of any new file (mkstemp would give 0600).
            fd = os.open(self.temp, flags, 0o666)
            raw = os.fdopen(fd, "wb", buffering=1 << 20)
            self.file = WriteBehind(Writeback(raw))  # type: ignore[arg-type]
        except BaseException as e:  # a signal here would skip __exit__: the temp file must not stay
            if self.file is None and fd >= 0:
                with contextlib.suppress(OSError):  # once fdopen has it, only its file object closes it
                    raw.close() if raw is not None else os.close(fd)
            if not (isinstance(e, OSError) and fd < 0):  # O_EXCL refused: the file is not ours
                self._discard()
            if isinstance(e, OSError):
                raise describe_os_error(self.target, e) from None
            raise
        return self.file  # type: ignore[return-value]

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except BaseException as e:  # a signal (or a write error) before the rename: nothing stays
                self._discard()
                if isinstance(e, OSError):
                    raise describe_os_error(self.target, e) from None
                raise
        self._discard()
        if isinstance(exc, OSError) and not isinstance(exc, (OutputError, UsageError)):
            raise describe_os_error(self.target, exc) from None

    def _commit(self) -> None:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        with committing(self.final):
            os.replace(self.temp, self.target)
            _fsync_folder(os.path.dirname(os.path.abspath(self.target)))

    def _discard(self) -> None:
        """Drop the temp file (a failed or interrupted run); safe whatever part of setup ran."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close(abandon=True)
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def _fsync_folder(folder: str) -> None:
    if sys.platform == "win32":  # folders cannot be opened for fsync there
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TEMP_DIR_RE = re.compile(r"^\.(?P<base>.+)\.fp8stream-(?P<pid>\d+)\.tmpdir$")


class AtomicFolder:
    """Context manager: a temp folder beside `target` that becomes `target` only if the block succeeds.

    With `replace`, an existing target is moved aside, the new folder renamed in, then the old
    one removed: at every moment the target path is the complete old or new folder.
    """

    def __init__(self, target: str, replace: bool = False) -> None:
        self.target = os.path.abspath(target)
        folder, base = os.path.split(self.target)
        self.temp = os.path.join(folder, f".{base}.fp8stream-{os.getpid()}.tmpdir")
        self.replace = replace

    def __enter__(self) -> str:
        folder = os.path.dirname(self.target)
        for name in os.listdir(folder):
            m = _TEMP_DIR_RE.match(name)
            if m and not _pid_alive(int(m.group("pid"))):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        try:
            os.mkdir(self.temp)
        except OSError as e:
            raise describe_os_error(self.target, e) from None
        return self.temp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            return
        try:
            _fsync_folder(self.temp)
            with committing(True):  # the old target moved aside and the new one renamed in, as one step
                old = None
                if self.replace and os.path.lexists(self.target):
                    old = self.temp + ".old"
                    os.replace(self.target, old)
                os.replace(self.temp, self.target)
                _fsync_folder(os.path.dirname(self.target))
            if old is not None:
                shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.unlink(old)
        except BaseException as e:  # a signal before the rename too: nothing stays
            shutil.rmtree(self.temp, ignore_errors=True)
            if isinstance(e, OSError):
                raise describe_os_error(self.target, e) from None
            raise
