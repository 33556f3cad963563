"""What every command shares: the exit-code table and the guard that turns errors into one line."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, TypeVar

import click

from fp8stream import interrupts
from fp8stream.errors import EXIT_FAILURE, EXIT_SIGINT, FP8StreamError, Interrupted, OutputError
from fp8stream.io.storage import open_urls_with
from fp8stream.remote.location import UrlLocation

T = TypeVar("T")

open_urls_with(UrlLocation)  # every command reads and writes URLs through remote/ (docs/remote.md)

try:  # click >= 8.2: a bare `fp8stream` raises this to print the help, which must stay whole
    from click.exceptions import NoArgsIsHelpError

    _HELP_ERRORS: tuple[type[Exception], ...] = (NoArgsIsHelpError,)
except ImportError:  # click 8.1 prints the help itself
    _HELP_ERRORS = ()

EXIT_CODES = """\b
Exit codes:
  0    success
  1    failure (bad or unreadable input, write error, files differ for verify)
  2    usage error (bad option, output exists or is the input, a pattern
       that matches no layer, --max-memory below 300M, ...)
  3    nothing to calibrate (no FP8 linear layer)
  4    some files of a batch failed
  5    written, no layer scaled (a model family that can be neither run
       nor bounded: every FP8 layer weight-only; --method simulate to opt
       in to a guess); check: a family the forward pass cannot run
  6    check: the end-to-end SQNR is below --min-sqnr
  130  interrupted (Ctrl-C, SIGINT)
  143  terminated (SIGTERM)"""


def append_report(path: str, text: str) -> None:
    """--report FILE: append `text` as one more report; a FILE that cannot be written (its
    folder missing, no permission, disk full) is one line and exit 1, not a traceback."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        raise OutputError(f"--report {path}: {e.strerror or e}") from None


def fail(message: str, code: int) -> None:
    click.echo(f"fp8stream: error: {message}", err=True)
    sys.exit(code)


def _exit_interrupted(message: str, code: int) -> None:
    """Leave at once after a signal: a read-ahead thread may still be blocked reading stdin, and a
    normal interpreter exit would then abort on that stream's lock ("Fatal Python error:
    _enter_buffered_busy", exit -6) instead of exiting with the signal's code. Temporary files
    are already gone: the context managers ran while the exception unwound."""
    click.echo(f"fp8stream: error: {message}", err=True)
    sys.stderr.flush()
    os._exit(code)


def run_guarded(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a command body: user errors and signals become one line on stderr and an exit code.

    SIGTERM and SIGINT are turned into one exception (not KeyboardInterrupt, which some code on
    the way out treats as its own) so that context managers remove temporary files; once a
    signal has arrived, whatever exception ends the body (a cleanup that met a half-built
    object, a library that wrapped the exception in its own) ends in the signal's line and code.
    """
    previous = interrupts.take_over()
    interrupts.set_phase("running")
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # a signal may surface as any exception: _end exits, or it is raised again
        _end(e)
        raise
    finally:
        interrupts.set_phase("complete")
        interrupts.give_back(previous)
    return result


def _end(e: BaseException) -> None:
    """Exit for what ended a command body: a signal, a user error, memory; returns for a bug
    (its traceback is kept)."""
    signum = interrupts.received() or (e.exit_code - 128 if isinstance(e, Interrupted) else 0)
    if signum:
        _exit_interrupted(interrupts.message(signum), 128 + signum)
    elif isinstance(e, FP8StreamError):
        fail(str(e), e.exit_code)
    elif isinstance(e, KeyboardInterrupt):
        _exit_interrupted("interrupted", EXIT_SIGINT)
    elif isinstance(e, MemoryError):
        fail("out of memory", EXIT_FAILURE)
    elif isinstance(e, BrokenPipeError):
        _exit_reader_gone()


def _exit_reader_gone() -> None:
    """A report's reader left (`fp8stream check FILE --json | true`): one line and exit 1, not
    click's silent exit 1. Leave at once: the interpreter's exit would flush the broken stream
    again ("Exception ignored ... BrokenPipeError"); context managers ran while it unwound."""
    with contextlib.suppress(OSError):  # stderr may be the pipe that closed
        click.echo("fp8stream: error: the reading end of the pipe closed", err=True)
        sys.stderr.flush()
    os._exit(EXIT_FAILURE)


class OneLineErrors(click.Group):
    """The command group, with click's own errors (unknown option, bad value, missing argument)
    in the project's one-line form: `fp8stream: error: MESSAGE (see 'CMD --help')`, exit 2,
    instead of click's usage block over four lines."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        """The program's entry (the console script, `python -m fp8stream`; tests call main()):
        once the command is over, a signal no longer changes how it ends."""
        try:
            self.main(*args, **kwargs)
        finally:
            interrupts.ignore_from_now()

    def main(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except _HELP_ERRORS as e:
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            fail(" ".join(e.format_message().split()) + hint, e.exit_code)
        except click.ClickException as e:
            fail(" ".join(e.format_message().split()), e.exit_code)
        except click.Abort:
            fail("interrupted", EXIT_SIGINT)
        sys.exit(result if isinstance(result, int) else 0)
