"""The output file's writeback starts as it is written (io/writeback.py): the final fsync then
waits for the last part only. What can be checked without dropping caches is the mechanism: every
byte asked for once, in order, in parts of WRITEBACK_BYTES, and the output unchanged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fp8stream.io import writeback
from fp8stream.io.atomic import AtomicOutput


def test_each_part_of_the_output_is_sent_to_the_disk_once_in_order(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int, int]] = []  # (offset, bytes, flags)
    on_disk: list[int] = []  # the file's size when each was asked: its bytes had left the buffer

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        asked.append((offset, nbytes, flags))
        on_disk.append(os.fstat(fd).st_size)
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", lambda: record)
    monkeypatch.setattr(writeback, "WRITEBACK_BYTES", 1000)
    data = [bytes([i]) * 700 for i in range(10)]
    target = tmp_path / "out.safetensors"
    with AtomicOutput(str(target)) as f:
        for part in data:
            f.write(part)
    assert target.read_bytes() == b"".join(data)
    assert [a[0] for a in asked] == [0, 1400, 2800, 4200, 5600]  # every 2 parts: the first >= 1000 bytes
    assert all(n == 1400 and flags == writeback.SYNC_FILE_RANGE_WRITE for _, n, flags in asked)
    assert on_disk == [offset + n for offset, n, _ in asked]
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_the_kernels_call_is_found_and_accepted_on_linux(tmp_path: Path) -> None:
    """Python's os has no sync_file_range: the ctypes call must be found (Linux) and work."""
    call = writeback._sync_file_range()
    assert (call is not None) == sys.platform.startswith("linux")
    if call is not None:
        path = tmp_path / "f"
        path.write_bytes(b"x" * 10000)
        fd = os.open(path, os.O_RDWR)
        try:
            assert call(fd, 0, 10000, writeback.SYNC_FILE_RANGE_WRITE) == 0
        finally:
            os.close(fd)
