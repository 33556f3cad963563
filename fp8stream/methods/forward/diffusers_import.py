"""diffusers, imported once for the forward pass: its DiT model classes and single-file
converters, without what the pass never uses where the process is ours."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from fp8stream.errors import UsageError

INSTALL_HINT = "--method forward needs diffusers: pip install fp8stream[forward]"


class ForwardUnavailable(UsageError):
    """diffusers is not installed, or cannot be imported (the message says which, and what to do)."""


# diffusers imports these where they are installed (its quantizers' configs, its schedulers, the
# single-file loader's image processor, peft's loaders); the pass uses none of it, and they are
# half of diffusers' import time (1.8 of 3.5 s cold on the 2-core machine). Hidden, importlib says
# they are missing and diffusers does without them. diffusers decides once, at its own import, for
# the whole process: so only a process that uses diffusers for the pass alone (the command line, a
# batch job's worker: lean_for_this_process) imports it so; a library user's keeps it whole, and a
# process that imported diffusers before gets it as it is.
NOT_FOR_THE_PASS = ("transformers", "scipy", "peft")  # peft: it imports transformers
_lean = False


def lean_for_this_process() -> None:
    """This process uses diffusers for the forward pass alone: import it without NOT_FOR_THE_PASS."""
    global _lean
    _lean = True


@contextlib.contextmanager
def hidden_modules(names: tuple[str, ...]) -> Iterator[None]:
    """Inside, importing any of `names` not yet imported fails as if it were not installed."""
    hidden = [n for n in names if n not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found" entry
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_diffusers() -> None:
    """diffusers with its DiT models and single-file converters (imported now, in one place)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the hub: configs come from shapes
    try:
        if _lean and "diffusers" not in sys.modules:
            _import_lean()
        else:
            _import_diffusers_models()
    except (ImportError, RuntimeError) as e:  # diffusers' lazy modules say a failed import with a RuntimeError
        if sys.modules.get("diffusers") is None:  # diffusers itself did not import
            raise ForwardUnavailable(INSTALL_HINT) from None
        raise ForwardUnavailable(f"diffusers is installed but cannot be imported ({e})") from None
    from diffusers.utils import logging

    logging.set_verbosity_error()


def _import_lean() -> None:
    try:
        with hidden_modules(NOT_FOR_THE_PASS):
            _import_diffusers_models()
    except (ImportError, RuntimeError):
        # something else installed that diffusers imports needs them after all: diffusers as
        # installed, its modules imported again (those imported while hidden decided without them)
        for name in [n for n in sys.modules if n == "diffusers" or n.startswith("diffusers.")]:
            del sys.modules[name]
        _import_diffusers_models()


def _import_diffusers_models() -> None:
    import diffusers.loaders.single_file_utils  # noqa: F401  # the families' converters
    import diffusers.models.transformers  # noqa: F401  # every DiT model class the families name
