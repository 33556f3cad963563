"""Errors a user can cause, each with the exit code the CLI documents.

The CLI turns any FP8StreamError into one line on stderr and its exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_DO = 3
EXIT_PARTIAL = 4
EXIT_UNSCALED = 5  # written, but no layer scaled (every FP8 layer weight-only: an unknown model family)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class FP8StreamError(Exception):
    """A failure with a one-line message meant for the user."""

    exit_code = EXIT_FAILURE


class InvalidCheckpointError(FP8StreamError):
    """The input is not a valid safetensors file (bad header, truncated, inconsistent)."""


class UsageError(FP8StreamError):
    """The command line asks for something impossible (output is the input, exists, ...)."""

    exit_code = EXIT_USAGE


class NothingToCalibrateError(FP8StreamError):
    """The checkpoint has no FP8 linear layer we can give a scale."""

    exit_code = EXIT_NOTHING_TO_DO


class OutputError(FP8StreamError):
    """The output cannot be written (folder not writable, disk full, ...)."""


class Interrupted(FP8StreamError):
    """SIGINT or SIGTERM arrived; the exit code follows the shell convention 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.exit_code = 128 + signum

