"""Read-ahead for the forward pass: the Linears' weight rows read by a few threads while the
model computes, in the order the model will ask for them, within a byte window.

Why: the pass asks for one Linear's weight at a time; read on demand, the disk sees one request
at a time (queue depth 1) and waits for the compute, the compute for the disk. Here several
positioned reads are in flight, and on a GPU the raw bytes (FP8: a quarter of float32) are
copied to the device on a side stream by the reading thread; the model's stream waits on an
event, never the host. The order is the modules' registration order, which diffusers' models
follow closely; a weight asked for before its turn is read at once, nothing is read twice.
The decode (FP8 -> float32, times the weight scale) stays where it was: the values are the
same bytes as without read-ahead.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Sequence

import torch

from fp8stream.io.overlap import start_pool
from fp8stream.methods.forward.mapping import Run
from fp8stream.methods.forward.row_source import RowSource
from fp8stream.methods.forward_settings import READ_AHEAD_BYTES

READ_THREADS = 4
# A weight read ahead that is still not asked for when the model is this many weights past it in
# the order is dropped (a Linear that does not run, e.g. a branch the inputs do not take): it would
# hold its share of the window to the end. Asked for later after all, it is read then.
STALE_AFTER = 32


@dataclass
class Loaded:
    """One run's rows: the raw bytes on the host, or already on the device (with the event
    that says the copy is done)."""

    raw: bytearray | None = None
    device_bytes: torch.Tensor | None = None
    ready: object | None = None  # torch.cuda.Event


class Prefetcher:
    """`take(target)` gives a weight's runs read ahead; `close()` stops the readers."""

    def __init__(self, source: RowSource, order: Sequence[tuple[str, list[Run]]], device: torch.device,
                 window_bytes: int | None = None, threads: int = READ_THREADS, stale_after: int = STALE_AFTER) -> None:
        self.source = source
        self.device = device
        self.order = list(order)
        self.runs = dict(self.order)
        self.position = {target: i for i, (target, _) in enumerate(self.order)}
        self.stale_after = stale_after
        default = READ_AHEAD_BYTES.get(device.type, READ_AHEAD_BYTES["cpu"])
        self.window = window_bytes if window_bytes is not None else default
        self.pool = start_pool(threads, "fp8stream-read")  # its threads started now, each safe from a signal
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: dict[str, Future] = {}
        self.size: dict[str, int] = {}
        self.ahead = 0  # bytes submitted and not yet taken
        self.next = 0  # index into order of the next weight to submit
        self.done: set[str] = set()
        self.lock = threading.Lock()
        self._fill()

    def __contains__(self, target: str) -> bool:
        return target in self.runs and target not in self.done

    def _bytes(self, runs: list[Run]) -> int:
        total = 0
        for r in runs:
            info = self.source.info(r.source)
            rows = info.shape[0] if info.shape else 1
            total += info.nbytes // rows * (r.stop - r.start) if rows else 0
        return total

    def _submit(self, target: str) -> None:
        runs = self.runs[target]
        self.size[target] = self._bytes(runs)
        self.ahead += self.size[target]
        self.pending[target] = self.pool.submit(self._load, runs)

    def _fill(self) -> None:
        """Submit the next weights in order while the window has room (always one)."""
        while self.next < len(self.order) and (self.ahead < self.window or not self.pending):
            target = self.order[self.next][0]
            self.next += 1
            if target not in self.pending and target not in self.done:
                self._submit(target)

    def _load(self, runs: list[Run]) -> list[Loaded]:
        out = []
        for r in runs:
            raw = self.source.read_rows(r.source, r.start, r.stop)
            if self.stream is None or not raw:
                out.append(Loaded(raw=raw))
                continue
            with torch.cuda.stream(self.stream):
                t = torch.frombuffer(raw, dtype=torch.uint8).to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            event.synchronize()  # the host buffer may go: the copy from it has finished
            out.append(Loaded(device_bytes=t, ready=event))
        return out

    def take(self, target: str) -> list[Loaded]:
        """The weight's runs, waiting for its reads; a device tensor is usable on the current
        stream once this returns (the stream waits on the copy's event)."""
        with self.lock:
            if target not in self.pending:
                self._submit(target)
            future = self.pending.pop(target)
            self.done.add(target)
        loaded = future.result()
        with self.lock:
            self.ahead -= self.size.pop(target)
            self._drop_stale(self.position.get(target, 0) - self.stale_after)
            self._fill()
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            for part in loaded:
                if part.device_bytes is not None:
                    current.wait_event(part.ready)
                    part.device_bytes.record_stream(current)  # allocated on the side stream
        return loaded

    def _drop_stale(self, before: int) -> None:
        for stale in [t for t in self.pending if self.position[t] < before]:
            self.pending.pop(stale).cancel()  # a read already running finishes; its bytes are freed
            self.ahead -= self.size.pop(stale)

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
