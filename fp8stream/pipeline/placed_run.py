"""One read: a model whose files are local files, written to local files at fixed places.

The output's layout is fixed from the header, so no byte has to wait for the ones before it.
Whether a run does this is decided once, before the method is prepared (`copy_shares_reads`),
and declared to it (`ModelView.copy_takes_reads`), on any device. First the method reads what
it reads by name (`read_weights`: the forward pass, on the CPU or a GPU); every row range it
reads is handed here (the TensorSource's tap, `read`, from its reading threads) and placed in
the output at once, and an FP8 weight's rows are checked (NaN, all zero) and shown to the method
(the bound's row sums) as the stream would show them: on the CPU there, by the reading threads,
beside the model's compute; on a GPU where the pass holds them to use them (`held`, from the
thread that runs the model: its one copy there, the checks queued behind the model's work), so
no second copy to the GPU and nothing on the reading threads but reads and writes. Then each
file in data order: the rows
nobody read yet of a calibrated FP8 weight are read, checked, shown and placed; markers, scales
and the scalars the calibration reads are read whole and handled as the stream handles them;
tensors a method watches are read in chunks; every other byte (BF16 tensors, excluded layers,
what passes through) moves from file to file by the kernel (io/placed.py). Each input byte is
read from the disk once: by the pass, by this loop or by the kernel's copy.

Where the head start copied the passing-through tensors before the method existed
(pipeline/head_start.py; its thread may still be copying), two records are kept: rows `placed`
(in the output: claimed under a lock by whoever writes them, written once) and FP8 weight rows
`seen` (checked and shown to the method, once); the pass and this loop show the rows not seen
yet, read from the page cache the copy filled, and write only the rows not placed yet.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from fp8stream.errors import FP8StreamError, InvalidCheckpointError
from fp8stream.formats.layers import FP8Layer
from fp8stream.formats.plan_types import RewritePlan
from fp8stream.io.header import TensorInfo
from fp8stream.io.placed import PlacedWriter
from fp8stream.io.reader import CHUNK_BYTES, chunk_bytes_for
from fp8stream.pipeline.inputs import InputPart, ModelInput
from fp8stream.pipeline.loop import Feed, StreamState, read_whole, small_tensor
from fp8stream.pipeline.outputs import OutputTarget

_ADVISE = getattr(os, "posix_fadvise", None)  # Linux and the BSDs; macOS has none (then no read-ahead hint)


@dataclass
class PlacedFile:
    """One input file and the output file it becomes, written at fixed places."""

    part: InputPart
    plan: RewritePlan
    writer: PlacedWriter

    @property
    def in_fd(self) -> int:
        return self.part.source.stream.fileno()


def local_files(model: ModelInput) -> bool:
    """Whether every file of the model is a plain local file, read by positioned reads."""
    return os.name == "posix" and all(
        p.location.local_path is not None and p.source.path is not None and p.source.size is not None
        and not p.source.compressed and p.source.read_at is None for p in model.parts)


def copy_shares_reads(model: ModelInput, output: OutputTarget | None, verify: bool) -> bool:
    """Whether the run writes at fixed places, its copy taking its bytes from the method's reads:
    every input a plain local file (a spooled stream too), OUT a local file or folder, not
    compressed, no --verify (which keeps the stream: it hashes every tensor as it reads it)."""
    return (output is not None and output.zstd is None and output.location.local_path is not None
            and not verify and local_files(model))


def shows_as_read(device: str) -> bool:
    """Whether the reading threads check an FP8 weight's rows and show them to the method (the
    CPU: numpy on the host, beside the model's compute), or the thread that holds them for the
    pass does (a GPU: from the pass's one copy there; a second copy and torch calls on the
    reading threads took most of their time: docs/speed.md)."""
    return device == "cpu"


def rows_of(info: TensorInfo) -> int:
    """The rows read_rows counts in (a scalar: one). A tensor whose bytes do not split into equal
    rows (a sub-byte dtype: F4 packs two values a byte) is placed as one row, by the copy."""
    rows = info.shape[0] if info.shape else 1
    return 1 if rows and info.nbytes % rows else rows


def row_split(info: TensorInfo) -> tuple[int, int]:
    """(rows, bytes per row) of `info`, rows counted as `rows_of` counts them."""
    rows = rows_of(info)
    return rows, info.nbytes // rows if rows else 0


class Covered:
    """Which rows of each tensor are placed already: [start, stop) spans."""

    def __init__(self) -> None:
        self._spans: dict[str, list[tuple[int, int]]] = {}

    def missing(self, name: str, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of rows [start, stop) not placed yet, in row order."""
        out, at = [], start
        for a, b in sorted(self._spans.get(name, ())):
            if b <= at or a >= stop:
                continue
            if a > at:
                out.append((at, a))
            at = max(at, b)
        if at < stop:
            out.append((at, stop))
        return out

    def add(self, name: str, start: int, stop: int) -> None:
        self._spans.setdefault(name, []).append((start, stop))


class Placements:
    """Which rows of each tensor are in the output: claimed, under one lock, by whoever writes
    them (the head start's thread, the forward pass's readers, the loop), each row once."""

    def __init__(self) -> None:
        self._covered = Covered()
        self._lock = threading.Lock()

    def claim(self, name: str, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of rows [start, stop) nobody placed yet, now the caller's to write."""
        with self._lock:
            spans = self._covered.missing(name, start, stop)
            for a, b in spans:
                self._covered.add(name, a, b)
        return spans


class Placer:
    """Places rows of any tensor of the model in its output file, once (`placed`); FP8 weight
    rows of a calibrated layer are checked and shown to the method once (`seen`), where the bytes
    were placed already too (the head start copies them before the method exists). It is the
    source's tap while the method reads (io.source.ReadTap): `read` places what the reading
    threads read, `held` checks and shows an FP8 weight's rows as the pass holds them."""

    def __init__(self, files: list[PlacedFile], feed: Feed, state: StreamState,
                 placed: Placements | None = None) -> None:
        self.feed, self.state = feed, state
        self.file_of = {info.name: f for f in files for info in f.plan.header.tensors}
        self.placed = placed or Placements()
        self.seen = Covered()
        self.shows_as_read = shows_as_read(feed.device)
        self._lock = threading.Lock()  # `seen` and the checks: the reading threads show rows on the CPU

    def takes(self, f: PlacedFile, name: str) -> bool:
        """Rows read elsewhere are placed here: FP8 weights and what passes through unwatched."""
        return name in f.plan.layer_by_weight or not (read_whole(f.plan, name)
                                                      or name in self.feed.method_plan.watches)

    def read(self, name: str, start: int, stop: int, data: bytearray) -> None:
        """ReadTap.read: the rows not placed yet placed (Placements claims them under its lock);
        on the CPU an FP8 weight's rows are checked and shown here too (`held` on a GPU)."""
        f = self.file_of.get(name)
        if f is None or not self.takes(f, name):
            return
        info = f.plan.header.get(name)
        if info.shape and rows_of(info) != info.shape[0]:  # rows of unequal bytes: copied whole
            return
        layer = f.plan.layer_by_weight.get(name)
        if layer is not None and self.shows_as_read:
            self._show(layer, start, stop, data)
        self._write(f, info, start, stop, memoryview(data))

    def held(self, name: str, start: int, stop: int, rows) -> None:
        """ReadTap.held: on a GPU, an FP8 weight's rows not seen yet checked and shown from the
        bytes the pass holds (the read-ahead's uint8 tensor there: no copy made here; host bytes
        where the pass read them on demand). On the CPU `read` has shown them."""
        if self.shows_as_read:
            return
        f = self.file_of.get(name)
        layer = f.plan.layer_by_weight.get(name) if f is not None else None
        if layer is not None:
            self._show(layer, start, stop, rows)

    def _show(self, layer: FP8Layer, start: int, stop: int, rows) -> None:
        """Rows [start, stop) of the layer's weight (their bytes, or a torch tensor on the pass's
        device) to the checks and the method, those not seen yet."""
        if isinstance(rows, (bytes, bytearray, memoryview)):
            rows = np.frombuffer(rows, dtype=np.uint8)
        rows = rows.reshape(-1, layer.in_features)
        with self._lock:
            for a, b in self.seen.missing(layer.weight.name, start, stop):
                self.feed.show(layer, rows[a - start:b - start], a, self.state.checks)
                self.seen.add(layer.weight.name, a, b)

    def place(self, f: PlacedFile, info: TensorInfo, start: int, stop: int, data: memoryview,
              at: int | None = None) -> None:
        """Rows [start, stop) of `info`, as this loop read them: those of an FP8 weight not seen
        yet checked and shown, those not placed yet placed (`_write`)."""
        layer = f.plan.layer_by_weight.get(info.name)
        if layer is not None:
            self._show(layer, start, stop, data)
        self._write(f, info, start, stop, data, at)

    def _write(self, f: PlacedFile, info: TensorInfo, start: int, stop: int, data: memoryview,
               at: int | None = None) -> None:
        """The rows of [start, stop) nobody placed yet, from `data` (their bytes). `at`: where
        they start in the input file, when this loop read them from it: then the kernel copies
        them from there (their pages were just read), not a write of our buffer (pread + pwrite
        of 1.2 GB of FP8 rows took 2.7-3.9 s here, pread + copy 1.1-1.4 s)."""
        row_bytes = len(data) // (stop - start) if stop > start else 0
        name = f.plan.out_names[info.name]
        for a, b in self.placed.claim(info.name, start, stop):
            part = data[(a - start) * row_bytes:(b - start) * row_bytes]
            if at is not None and f.writer.kernel_copy:
                f.writer.copy_from(f.in_fd, at + (a - start) * row_bytes, name, a * row_bytes, len(part))
            else:
                f.writer.write_at(name, a * row_bytes, part)


def place_file(f: PlacedFile, placer: Placer) -> None:
    """One file's tensors in data order, each placed as the plan says (see the module's doc);
    the input must end where its header says."""
    plan, feed, state = f.plan, placer.feed, placer.state
    buffer = bytearray(CHUNK_BYTES)
    for info in plan.header.tensors:
        at = plan.header.data_start + info.begin
        layer = plan.layer_by_weight.get(info.name)
        if read_whole(plan, info.name) and layer is None:
            raw = bytearray(info.nbytes)
            _read(f, at, info.nbytes, raw)
            data = small_tensor(info, raw, plan, feed, state)
            if data:
                f.writer.write(plan.out_names[info.name], data)
        elif layer is not None or info.name in feed.method_plan.watches:
            _read_rows(f, info, at, buffer, placer)
            if layer is not None and feed.method_plan.rows:
                feed.method.weight_done(layer)
        else:
            rows, row_bytes = row_split(info)
            for a, b in placer.placed.claim(info.name, 0, rows):
                f.writer.copy_from(f.in_fd, at + a * row_bytes, plan.out_names[info.name], a * row_bytes,
                                   (b - a) * row_bytes)
        feed.bar.update(info.nbytes)
    check_unchanged(f.part)


def check_unchanged(part: InputPart) -> None:
    """The input still has the size it had when opened (another program may write to it)."""
    if os.fstat(part.source.stream.fileno()).st_size != part.source.size:
        raise InvalidCheckpointError(f"{part.source.label}: file changed size while being read")


def _read_rows(f: PlacedFile, info: TensorInfo, at: int, buffer: bytearray, placer: Placer) -> None:
    """The rows of a tensor not shown yet, read a chunk of whole rows at a time: an FP8 weight's
    not seen (checked and shown), a watched tensor's all (shown to the method, in order), those
    not placed yet placed."""
    rows, row_bytes = row_split(info)
    step = max(1, chunk_bytes_for(info) // row_bytes) if row_bytes else 1
    watched = info.name in placer.feed.method_plan.watches
    spans = placer.seen.missing(info.name, 0, rows) if row_bytes and not watched else [(0, rows)]
    if spans and row_bytes and _ADVISE is not None:  # the kernel reads ahead while we compute
        _ADVISE(f.in_fd, at + spans[0][0] * row_bytes, (spans[-1][1] - spans[0][0]) * row_bytes,
                         os.POSIX_FADV_WILLNEED)
    for a, b in spans:
        for lo in range(a, b, step):
            hi = min(b, lo + step)
            size = (hi - lo) * row_bytes
            data = _read(f, at + lo * row_bytes, size, buffer if size <= len(buffer) else bytearray(size))
            if watched:
                placer.feed.method.observe_tensor(info, data)
            placer.place(f, info, lo, hi, data, at + lo * row_bytes)


def _read(f: PlacedFile, offset: int, size: int, buffer: bytearray) -> memoryview:
    """`size` bytes of the input at `offset`, into `buffer`."""
    view = memoryview(buffer)[:size]
    done = 0
    while done < size:
        try:
            got = os.preadv(f.in_fd, [view[done:]], offset + done)
        except OSError as e:  # not the output's error, which the sink's exit would call it
            raise FP8StreamError(f"{f.part.source.label}: read error ({e.strerror})") from None
        if got <= 0:
            raise InvalidCheckpointError(f"{f.part.source.label}: file ends inside the data (truncated)")
        done += got
    return view
