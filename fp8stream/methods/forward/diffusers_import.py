"""diffusers, imported once for the forward pass: its DiT model classes and single-file
converters, without what the pass never uses."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from fp8stream.errors import UsageError

INSTALL_HINT = "--method forward needs diffusers: pip install fp8stream[forward]"


class ForwardUnavailable(UsageError):
    """diffusers is not installed (the message says how to get it)."""


# diffusers imports these where they are installed (its quantizers' configs, its schedulers, the
# single-file loader's image processor); the pass uses none of it, and they are half of diffusers'
# import time (1.8 of 3.5 s cold on the 2-core machine). diffusers is imported as it would be without
# them (it asks importlib, which then says they are missing, and decides once, at its own import:
# a process that imported diffusers before gets it as it is); the text encoders import
# transformers themselves, later.
NOT_FOR_THE_PASS = ("transformers", "scipy", "peft")  # peft: it imports transformers


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
        _import_lean()
    except ImportError:
        raise ForwardUnavailable(INSTALL_HINT) from None
    from diffusers.utils import logging

    logging.set_verbosity_error()


def _import_lean() -> None:
    if "diffusers" in sys.modules:
        _import_diffusers_models()
        return
    try:
        with hidden_modules(NOT_FOR_THE_PASS):
            _import_diffusers_models()
    # something else installed that diffusers imports needs them after all: diffusers as
    # installed (its lazy modules say a failed import with a RuntimeError)
    except (ImportError, RuntimeError):
        _import_diffusers_models()


def _import_diffusers_models() -> None:
    import diffusers.loaders.single_file_utils  # noqa: F401  # the families' converters
    import diffusers.models.transformers  # noqa: F401  # every DiT model class the families name
