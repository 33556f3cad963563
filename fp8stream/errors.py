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
EXIT_BELOW_MIN_SQNR = 6  # `check --min-sqnr DB`: the file's end-to-end SQNR as ComfyUI runs it is below DB
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


class NotRunnable(FP8StreamError):
    """`check`: the model family has no forward pass here (exit 5, as `calibrate` exits on it:
    nothing could be measured; the report says what the file alone shows)."""

    exit_code = EXIT_UNSCALED


class BelowMinSqnr(FP8StreamError):
    """`check --min-sqnr DB`: the end-to-end SQNR of the file as ComfyUI runs it is below DB.

    Exit codes (the table of `fp8stream --help`, commands/common.EXIT_CODES): 0 success, 1
    failure, 2 usage error, 3 nothing to calibrate (no FP8 linear layer), 4 some files of a batch
    failed, 5 written with no layer scaled (`check`: a family without a forward pass), 6 this,
    130 SIGINT, 143 SIGTERM."""

    exit_code = EXIT_BELOW_MIN_SQNR


class OutputError(FP8StreamError):
    """The output cannot be written (folder not writable, disk full, ...)."""


class Interrupted(FP8StreamError):
    """SIGINT or SIGTERM arrived; the exit code follows the shell convention 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.exit_code = 128 + signum

