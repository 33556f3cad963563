"""Overlap disk and compute: read ahead and write behind on threads, in recycled buffers.

Reading, calibrating and writing one after the other leaves the disk idle while the CPU works
and the CPU idle while the disk works. A reader thread fills chunks ahead of the consumer and a
writer thread drains them behind it. Chunks live in a fixed pool of buffers that go round and
round: fresh multi-MB buffers cost a page fault per page and a zeroing each time (measured: 4x
slower copying), and freed ones pile up in the C heap. Memory is the pool, nothing more.

A pooled chunk is held by whoever uses it: the consumer until it asks for the next chunk, the
writer from `write` until the bytes are out. The buffer is refilled once nobody holds it.
"""

from __future__ import annotations

import queue
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable, Iterable

POOL_BUFFERS = 6  # read-ahead 2 + consumer 1 + write-behind 3
WRITE_DEPTH = 3
_END = object()

_registry_lock = threading.Lock()
_pool_of: dict[int, "BufferPool"] = {}  # id(buffer) -> its pool, for the writer's holds


def start_thread(thread: threading.Thread) -> None:
    """Start a thread with SIGINT and SIGTERM held back until start() has returned: a signal
    handled while the main thread waits for the new thread to run leaves, in CPython, a thread
    object whose join() never returns (a Ctrl-C could then hang the cleanup). A held signal is
    delivered the moment start() returns; the new thread keeps them blocked (the main thread
    handles signals anyway)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose workers are all started now, each by `start_thread`'s rule (signals
    held back while it starts), not lazily at some later submit() a Ctrl-C might interrupt."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    started = threading.Barrier(workers + 1)
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
    try:
        for _ in range(workers):  # each task waits for the others: one new thread per submit
            pool.submit(started.wait)
        started.wait()
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pool


class BufferPool:
    """A fixed set of equal buffers with hold counts."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._holds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._buffers = [bytearray(size) for _ in range(count)]
        with _registry_lock:
            for buf in self._buffers:
                _pool_of[id(buf)] = self
                self._free.put(buf)

    def take(self, stop: threading.Event) -> bytearray | None:
        """A free buffer, held once by the taker; None if `stop` is set while waiting."""
        while not stop.is_set():
            try:
                buf = self._free.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self._holds[id(buf)] = 1
            return buf
        return None

    def _change(self, buf: object, delta: int) -> None:
        with self._lock:
            n = self._holds.get(id(buf), 0) + delta
            self._holds[id(buf)] = n
        if n == 0:
            self._free.put(buf)  # type: ignore[arg-type]

    def close(self) -> None:
        """Forget the buffers: each is freed once its last holder (a queued write) drops it."""
        with _registry_lock:
            for buf in self._buffers:
                _pool_of.pop(id(buf), None)
        self._buffers = []
        while not self._free.empty():
            self._free.get_nowait()


def hold(data: object) -> None:
    """Take a hold on the pooled buffer behind `data` (a memoryview), if it is pooled."""
    obj = getattr(data, "obj", None)
    pool = _pool_of.get(id(obj)) if obj is not None else None
    if pool is not None:
        pool._change(obj, +1)


def release(data: object) -> None:
    obj = getattr(data, "obj", None)
    pool = _pool_of.get(id(obj)) if obj is not None else None
    if pool is not None:
        pool._change(obj, -1)


class ChunkReader:
    """A thread that reads a known sequence of chunk sizes from `stream` into pooled buffers.

    `chunk_sizes` is the whole plan (e.g. every tensor's chunks in data order), so the reader
    never reads past the data it was asked for (a pipe may carry more after it). `next()` gives
    the next chunk as a memoryview held by the caller; a short read ends with EOFError.
    """

    def __init__(self, stream: BinaryIO, chunk_sizes: Iterable[int], buffer_size: int,
                 buffers: int = POOL_BUFFERS) -> None:
        self._stream = stream
        self._sizes = chunk_sizes
        self.pool = BufferPool(buffers, buffer_size)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fp8stream-read", daemon=True)
        try:
            start_thread(self._thread)
        except BaseException:  # a signal held back while it started: the caller never gets to close()
            self._stop.set()
            raise

    def _run(self) -> None:
        try:
            for size in self._sizes:
                buf = self.pool.take(self._stop)
                if buf is None:
                    return
                view = memoryview(buf)[:size]
                got = 0
                while got < size:
                    n = self._stream.readinto(view[got:])
                    if not n:
                        self._queue.put(EOFError())
                        return
                    got += n
                self._queue.put(view)
        except BaseException as e:  # handed to the consumer, raised in its thread
            self._queue.put(e)
            return
        self._queue.put(_END)

    def next(self) -> memoryview:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise EOFError()
        if isinstance(item, BaseException):
            self._queue.put(item)  # keep failing the same way
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pool.close()


class WriteBehind:
    """A file-like sink whose writes happen on a thread; write errors surface on the next call.

    Data handed to `write` must not change afterwards; pooled chunks are held until written.
    """

    def __init__(self, sink: BinaryIO, depth: int = WRITE_DEPTH) -> None:
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="fp8stream-write", daemon=True)
        start_thread(self._thread)

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
                if item is not _END:
                    release(item)
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raise()
        hold(data)
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


def chunk_plan(tensors: Iterable, chunk_bytes: Callable[[object], int]) -> Iterable[int]:
    """Every chunk size of every tensor, in order (tensors with attribute nbytes)."""
    for info in tensors:
        step = chunk_bytes(info)
        for start in range(0, info.nbytes, step):
            yield min(step, info.nbytes - start)
