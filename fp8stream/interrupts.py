"""SIGINT and SIGTERM: one line on stderr, exit 130 or 143, and nothing left behind, at every moment.

A run goes through three phases, and a signal means something different in each:

- start-up (`early`, from the first line of `fp8stream.cli`): imports and option parsing, no
  file of ours exists yet, so the process leaves at once with its line and code;
- the command's body (`running`, inside `commands.common.run_guarded`): the signal becomes an
  `Interrupted` exception, so that every context manager removes its temporary file while it
  unwinds. Only the first signal raises: a second one (a user pressing Ctrl-C again) must not
  cut a cleanup short, so it is only recorded. Code that swallows the exception (a library's
  `except Exception` around an import) cannot lose it: it stays recorded, the next
  `raise_if_interrupted` (before every rename into place) raises it again, and the guard ends
  with the signal's line whatever exception surfaced;
- after the output is complete (`complete`): the run has done its work; the signal is recorded
  and the run ends normally (exit 0), a second one leaves at once.

The handlers are the process's; threads never run them (CPython runs handlers in the main thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

from fp8stream.errors import EXIT_SIGINT, Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"phase": "early", "received": 0}


def message(signum: int) -> str:
    """The one line a signal ends a run with (without the 'fp8stream: error: ' prefix)."""
    return "interrupted" if 128 + signum == EXIT_SIGINT else f"interrupted by signal {signum}"


def leave_now(signum: int) -> None:
    """Write the line and exit with 128 + signum, running nothing else (no cleanup is due)."""
    try:
        os.write(2, f"fp8stream: error: {message(signum)}\n".encode())
    finally:
        os._exit(128 + signum)


def on_signal(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM in every phase (see the module's docstring)."""
    first = not _state["received"]
    if first:
        _state["received"] = signum
    phase = _state["phase"]
    if phase == "early" or (phase == "complete" and not first):
        leave_now(signum)
    if phase == "running" and first:
        raise Interrupted(signum)


def install() -> None:
    """Take SIGINT and SIGTERM over (start-up phase): the first thing `fp8stream.cli` does."""
    for sig in SIGNALS:
        signal.signal(sig, on_signal)


def take_over() -> dict:
    """Install the handlers for a command's body; returns the ones to give back after it
    (none in the CLI's process, where they were ours from the start). The record of an earlier
    signal is cleared: an in-process caller (a test) may run several commands."""
    _state["received"] = 0
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    install()
    return {sig: h for sig, h in previous.items() if h is not on_signal}


def give_back(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def set_phase(phase: str) -> str:
    """Enter 'early', 'running' or 'complete'; returns the phase before."""
    before, _state["phase"] = _state["phase"], phase
    return before


def received() -> int:
    """The first signal received (0: none)."""
    return _state["received"]


def raise_if_interrupted() -> None:
    """Raise the recorded signal again while running: for the points where nothing must go on
    after one (a rename into place), in case the first raise was swallowed on its way out."""
    if _state["received"] and _state["phase"] == "running":
        raise Interrupted(_state["received"])


@contextlib.contextmanager
def committing(final: bool) -> Iterator[None]:
    """Around a rename into place: a signal recorded before it raises now (nothing is renamed);
    one arriving during it waits until it is done; after the `final` rename the run is
    complete, so a signal then no longer takes it back (the output is whole)."""
    raise_if_interrupted()
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS)) if main else None
    try:
        raise_if_interrupted()
        yield
        if final and _state["phase"] == "running":
            set_phase("complete")
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
