"""SIGINT and SIGTERM: one line on stderr, exit 130 or 143, and nothing left behind, at every moment.

A run goes through these phases, and a signal means something different in each:

- start-up (`early`, from the first line of `fp8stream.cli`): imports and option parsing, no
  file of ours exists yet, so the process leaves at once with its line and code;
- the command's body (`running`, inside `commands.common.run_guarded`): the signal becomes an
  `Interrupted` exception, so that every context manager removes its temporary file while it
  unwinds. Only the first signal raises: a second one (a user pressing Ctrl-C again) must not
  cut a cleanup short, so it is only recorded. Code that swallows the exception (a library's
  `except Exception` around an import) cannot lose it: it stays recorded, the next
  `raise_if_interrupted` (before every rename into place) raises it again, and the guard ends
  with the signal's line whatever exception surfaced;
- preparing the method (`deferring`: importing torch and diffusers, the meta pass): only
  recorded, and raised once it is done (seconds). torch runs Python code from C++ while it
  imports; an exception raised there cannot cross it and aborts the process (exit -6, a C++
  traceback), so it must not be raised there. Nothing of ours is on disk yet then either;
- renaming the output into place (`committing`, io/atomic.py): only recorded, so that the
  rename is never cut in two, and acted on once it is done;
- after the output is complete (`complete`): the run has done its work; the signal is recorded
  and the run ends normally (exit 0), a second one leaves at once.

The handlers are the process's; threads never run them (CPython runs handlers in the main thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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
    # 'committing', 'deferring': only recorded, acted on once the block is done


def install() -> None:
    """Take SIGINT and SIGTERM over (start-up phase): the first thing `fp8stream.cli` does."""
    for sig in SIGNALS:
        signal.signal(sig, on_signal)
    if sys.unraisablehook is not _unraisable:
        _unraisable.previous = sys.unraisablehook  # type: ignore[attr-defined]
        sys.unraisablehook = _unraisable


def _unraisable(report) -> None:
    """Python drops an exception raised where it cannot propagate (a __del__, a weakref
    callback) with a traceback on stderr: for ours, it stays recorded and is raised again at
    the next check, so the report would only add lines to the one the run ends with."""
    if not isinstance(report.exc_value, Interrupted):
        _unraisable.previous(report)  # type: ignore[attr-defined]


def ignore_from_now() -> None:
    """The command is over and its exit code decided: the interpreter's own shutdown follows,
    during which Python resets its handlers to the default (a signal then would kill the
    process by it, after a complete run). Ignored signals stay ignored through it."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


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
    """Enter 'early', 'running', 'committing' or 'complete'; returns the phase before."""
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
def deferred() -> Iterator[None]:
    """A signal during the block is recorded and raised when it ends (see 'deferring' above)."""
    before = _state["phase"]
    if before == "running":
        set_phase("deferring")
    try:
        yield
    finally:
        set_phase(before)
    raise_if_interrupted()


@contextlib.contextmanager
def committing(final: bool) -> Iterator[None]:
    """Around a rename into place: a signal recorded before it raises now (nothing is renamed);
    one arriving during it is only recorded (the rename and the folder's fsync are not cut in
    two); after it, a `final` rename has completed the run, so the signal no longer takes it
    back (the output is whole); after any other (a shard inside a folder renamed later) it
    raises. Held in Python, not by a signal mask: another thread (torch's) may take the signal."""
    raise_if_interrupted()
    before = _state["phase"]
    if before == "running":
        set_phase("committing")
    try:
        yield
    except BaseException:
        set_phase(before)
        raise
    set_phase("complete" if final and before == "running" else before)
    raise_if_interrupted()
