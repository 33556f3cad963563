"""Our lines apart from Ray's. Ray prints the errors of dead workers ("A worker died...") and
some notices straight to the driver's stdout and stderr, where they would mix into the JSON
report. While Ray runs, fds 1 and 2 (inherited by Ray's own processes too) point at the Ray
log, and our reports and progress go through duplicates of the real stdout and stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, TextIO


class Console:
    def __init__(self) -> None:
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr

    @contextlib.contextmanager
    def ray_output_to(self, path: str) -> Iterator[None]:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
        self.err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
        try:
            os.dup2(log, 1)
            os.dup2(log, 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr, self.out, self.err):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, log):
                os.close(fd)
            self.out.close()
            self.err.close()
            self.out, self.err = sys.stdout, sys.stderr


CONSOLE = Console()
