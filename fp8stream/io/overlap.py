"""Overlap disk and compute: read ahead and write behind on threads, with bounded memory.

Reading, calibrating and writing one after the other leaves the disk idle while the CPU works
and the CPU idle while the disk works. A reader thread keeps up to `depth` blocks queued ahead
of the consumer and a writer thread drains up to `depth` chunks behind the producer, so the
memory cost is bounded (depth × block) and errors surface in the calling thread.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

BLOCK_BYTES = 8 << 20
DEPTH = 3
_END = object()


class ReadAhead:
    """A read-only view of `stream` that a thread fills ahead of time, up to `limit` bytes."""

    def __init__(self, stream: BinaryIO, limit: int, block: int = BLOCK_BYTES, depth: int = DEPTH) -> None:
        self._stream = stream
        self._limit = limit
        self._block = block
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._thread = threading.Thread(target=self._run, name="fp8stream-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        remaining = self._limit
        try:
            while remaining and not self._stop.is_set():
                buf = bytearray(min(self._block, remaining))
                view = memoryview(buf)
                got = 0
                while got < len(buf):
                    n = self._stream.readinto(view[got:])
                    if not n:
                        break
                    got += n
                remaining -= got
                self._put(memoryview(buf)[:got] if got < len(buf) else memoryview(buf))
                if got < len(buf):
                    break  # end of stream: the consumer sees the short read
        except BaseException as e:  # handed to the consumer, raised in its thread
            self._put(e)
            return
        self._put(_END)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readinto(self, view: memoryview) -> int:
        """Copy up to len(view) bytes; 0 means the stream ended."""
        if not len(self._current):
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # keep answering 0
                return 0
            if isinstance(item, BaseException):
                raise item
            self._current = item
        n = min(len(view), len(self._current))
        view[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class WriteBehind:
    """A file-like sink whose writes happen on a thread; write errors surface on the next call."""

    def __init__(self, sink: BinaryIO, depth: int = DEPTH) -> None:
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="fp8stream-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _END:
                    return
                if self._error is None and not self._abandoned:
                    self._sink.write(item)
            except BaseException as e:
                self._error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue data (which must not change afterwards) for writing."""
        self._raise()
        self._queue.put(data)
        return len(data)

    def flush(self) -> None:
        """Wait until every queued write is done, then flush the sink."""
        self._queue.join()
        self._raise()
        self._sink.flush()

    def fileno(self) -> int:
        return self._sink.fileno()

    def close(self, abandon: bool = False) -> None:
        """Finish queued writes (or drop them with abandon=True) and close the sink."""
        self._abandoned = abandon
        self._queue.put(_END)
        self._thread.join()
        self._sink.close()
        if not abandon:
            self._raise()
