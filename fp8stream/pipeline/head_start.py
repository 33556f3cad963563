"""The head start: the input's data copied into the output file while the method prepares.

A method may take seconds to decide the output layout (the forward pass imports diffusers and
runs the model on meta tensors, about 14 s of a Flux-dev run on the H200) and the copy waited
for it. Most of the data cannot depend on that decision: the plan puts every tensor whose size
may change (markers) and every added one (the tail) after data copied byte for byte, and pads
the header to a room that holds any choice (formats/plan.py). So the leading run of copied
tensors has its place in the output before the method has decided, and a thread copies it
there meanwhile: by `os.copy_file_range` (the kernel copies; no Python holds the GIL, which
the imports need), else positioned reads and writes.

Once the method has decided, the copy stops after its current chunk; the bytes it finished
that the final plan places at the same offsets are passed over by the writer
(io/writer.StreamingWriter `present`), and the stream still reads them for the method. Only a
local file read to a local file, uncompressed and not sharded, gets one, and only when twice
the input fits in the free memory (the stream reads the data again, from the page cache).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from fp8stream.formats.plan_types import RewritePlan, Role
from fp8stream.io.header import encode_header
from fp8stream.io.overlap import start_thread
from fp8stream.io.writeback import start_writeback

CHUNK = 64 << 20  # the copy stops within one chunk of being told to
BUFFER = 4 << 20  # without copy_file_range: the bytes held in memory at a time


@dataclass(frozen=True)
class Copy:
    """Bytes copied as they are: input data offset -> output data offset."""

    source: int
    target: int
    nbytes: int


def leading_copies(plan: RewritePlan) -> list[Copy]:
    """The output's first tensors that are input tensors copied byte for byte, up to the first
    that is not (a rewritten marker), with their offsets in both data sections."""
    _, infos = encode_header(plan.entries, plan.metadata, plan.header_room)
    written = [t for t in plan.header.tensors if plan.roles[t.name] not in (Role.MOVED_SCALE, Role.DROP)]
    copies = []
    for t, out in zip(written, infos):
        if plan.roles[t.name] is not Role.PASS:
            break
        copies.append(Copy(t.begin, out.begin, t.nbytes))
    return copies


def data_start(plan: RewritePlan) -> int:
    """Where the output's data section begins (the padded header's end)."""
    return len(encode_header(plan.entries, plan.metadata, plan.header_room)[0])


def agreed(before: RewritePlan, after: RewritePlan, copied: int) -> int:
    """Of the `copied` leading data bytes laid out by `before`, how many `after` places the same
    way (same header size, same copies): the bytes the writer may pass over."""
    if data_start(before) != data_start(after):
        return 0
    end = 0
    for a, b in zip(leading_copies(before), leading_copies(after)):
        if a != b:
            break
        end = a.target + a.nbytes
    return min(end, copied)


def _ranges(copies: list[Copy]) -> list[Copy]:
    """Copies merged where both sides are contiguous (most of a checkpoint is one range)."""
    merged: list[Copy] = []
    for c in copies:
        last = merged[-1] if merged else None
        if last and last.source + last.nbytes == c.source and last.target + last.nbytes == c.target:
            merged[-1] = Copy(last.source, last.target, last.nbytes + c.nbytes)
        elif c.nbytes:
            merged.append(c)
    return merged


class HeadStart:
    """The thread that copies `plan`'s leading copies from `source_path` into `target_path`."""

    def __init__(self, source_path: str, source_data_start: int, target_path: str, plan: RewritePlan) -> None:
        self._ranges = _ranges(leading_copies(plan))
        self._offsets = (source_data_start, data_start(plan))
        self._paths = (source_path, target_path)
        self._stop = threading.Event()
        self.copied = 0  # output data bytes done, from the start (the ranges follow each other there)
        self._thread = threading.Thread(target=self._run, name="head start", daemon=True)
        start_thread(self._thread)

    def stop(self) -> int:
        """Stop after the current chunk; the output data bytes copied from the start."""
        self._stop.set()
        self._thread.join()
        return self.copied

    def _run(self) -> None:
        src_base, dst_base = self._offsets
        try:
            src = os.open(self._paths[0], os.O_RDONLY)
            try:
                dst = os.open(self._paths[1], os.O_WRONLY)
                try:
                    for r in self._ranges:
                        if not self._copy(src, dst, src_base + r.source, dst_base + r.target, r.nbytes):
                            return
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        except OSError:
            return  # a head start only saves time: the stream writes whatever it did not copy

    def _copy(self, src: int, dst: int, src_at: int, dst_at: int, nbytes: int) -> bool:
        """One range, chunk by chunk, `copied` moved on after each; False once told to stop."""
        done = 0
        kernel = getattr(os, "copy_file_range", None)  # Linux; elsewhere positioned reads and writes
        while done < nbytes:
            if self._stop.is_set():
                return False
            n = min(CHUNK if kernel is not None else BUFFER, nbytes - done)
            if kernel is not None:
                try:
                    n = kernel(src, dst, n, src_at + done, dst_at + done)
                except OSError:  # a file system or kernel without it
                    kernel = None
                    continue
            else:
                n = os.pwrite(dst, os.pread(src, n, src_at + done), dst_at + done)
            if n <= 0:
                raise OSError("short copy")
            start_writeback(dst, dst_at + done, n)  # the disk writes them now, not in the final fsync
            done += n
            self.copied = dst_at + done - self._offsets[1]
        return True
