"""Micro-batches of one forward pass run in lock step, so that each Linear's weight is read and
dequantized once for all of them.

Micro-batch i runs (in its own thread; micro-batch 0 in the calling one) until a Linear has
run on it, then hands over to i + 1; the last hands back to 0, which frees that weight and goes
on to the next Linear, loading its weight. One thread computes at a time, so the result does
not depend on scheduling, and only one micro-batch's transient activations (attention, the MLP's
hidden states) exist at once; each holds its own residual stream between Linears. The model's
control flow is the same for every micro-batch (same shapes), so they call the same Linears in
the same order; a micro-batch that reaches a Linear whose weight is not loaded is a divergence,
reported as an error rather than computed wrongly.
"""

from __future__ import annotations

import threading
from typing import Callable

from fp8stream.io.overlap import start_thread


class _Aborted(Exception):
    """Another micro-batch failed: this one stops where it waits."""


class Lockstep:
    def __init__(self, n: int) -> None:
        self.n = n
        self._turn = 0
        self._done = [False] * n
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self._local = threading.local()

    def index(self) -> int:
        """The calling thread's micro-batch."""
        return getattr(self._local, "index", 0)

    def is_last(self) -> bool:
        return self.index() == self.n - 1

    def hand_over(self) -> None:
        """After a Linear ran on this micro-batch: let the next one run it, wait for our turn."""
        i = self.index()
        with self._cond:
            self._turn = self._next(i)
            self._cond.notify_all()
        self._wait(i)

    def run(self, calls: list[Callable[[], object]]) -> None:
        """Each call (one micro-batch's forward) in lock step; the first error is raised here."""
        threads = [threading.Thread(target=self._worker, args=(i, c), daemon=True)
                   for i, c in enumerate(calls) if i > 0]
        for t in threads:
            start_thread(t)
        try:
            self._worker(0, calls[0])
            for t in threads:
                t.join()
        except BaseException as e:  # an error or a signal in this thread: stop the others
            self._fail(e)
            for t in threads:
                t.join()
            raise
        if self._failed is not None:
            raise self._failed

    def _worker(self, i: int, call: Callable[[], object]) -> None:
        self._local.index = i
        try:
            self._wait(i)
            call()
        except _Aborted:
            if i == 0:
                raise self._failed  # type: ignore[misc]  # noqa: B904 (the failed worker's own exception, as it was)
        except BaseException as e:
            self._fail(e)
            if i == 0:
                raise
        finally:
            with self._cond:
                self._done[i] = True
                self._turn = self._next(i)
                self._cond.notify_all()

    def _next(self, i: int) -> int:
        for k in range(1, self.n + 1):
            j = (i + k) % self.n
            if not self._done[j]:
                return j
        return i

    def _wait(self, i: int) -> None:
        with self._cond:
            while self._turn != i and self._failed is None:
                self._cond.wait()
            if self._failed is not None:
                raise _Aborted()

    def _fail(self, e: BaseException) -> None:
        with self._cond:
            if self._failed is None:
                self._failed = e
            self._cond.notify_all()
