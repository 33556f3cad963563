"""What every command shares: the exit-code table and the guard that turns errors into one line."""

from __future__ import annotations

import signal
import sys
from typing import Callable, TypeVar

import click

from fp8stream.errors import EXIT_FAILURE, EXIT_SIGINT, FP8StreamError, raise_interrupted

T = TypeVar("T")

EXIT_CODES = """\b
Exit codes:
  0    success
  1    failure (bad or unreadable input, write error, files differ for verify)
  2    usage error (bad option, output exists or is the input, ...)
  3    nothing to calibrate (no FP8 linear layer)
  4    some files of a batch failed
  130  interrupted (Ctrl-C, SIGINT)
  143  terminated (SIGTERM)"""


def fail(message: str, code: int) -> None:
    click.echo(f"fp8stream: error: {message}", err=True)
    sys.exit(code)


def run_guarded(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a command body: user errors and signals become one line on stderr and an exit code.

    SIGTERM is turned into an exception so that context managers remove temporary files.
    """
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        return fn(*args, **kwargs)
    except FP8StreamError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_SIGINT)
    except MemoryError:
        fail("out of memory", EXIT_FAILURE)
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise AssertionError("unreachable")
