"""The forward pass on a thread while the copy streams (methods/forward/forward_method.py)."""

from __future__ import annotations


class BesideTheCopy:
    """The forward pass on a thread while the copy streams (on a GPU, which computes it while
    the host copies). Its result, or its error, is taken after the stream; `stop` (from
    ForwardMethod.close, whatever happened) ends it at its next Linear and waits for it. A daemon
    thread, so an interpreter that exits some other way does not wait for it either. On the
    CPU the pass runs after a streamed copy instead: both would compete for the same cores, and
    the host memory of both would add up."""

    def __init__(self, work) -> None:
        """`work(stop)`: the pass, which ends at its next Linear once `stop` is set."""
        import threading

        from fp8stream.io.overlap import start_thread

        self._work, self._value, self._error = work, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forward pass", daemon=True)
        try:
            start_thread(self._thread)
        except BaseException:  # a signal held back while it started: nobody will stop it but us
            self._stop.set()
            raise

    def _run(self) -> None:
        try:
            self._value = self._work(self._stop)
        except BaseException as e:  # handed to the main thread by result()
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """End the pass at its next Linear and wait for the thread; its result is dropped."""
        self._stop.set()
        self._thread.join()
