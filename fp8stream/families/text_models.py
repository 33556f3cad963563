"""What the text-encoder families (bert, t5, clip, llm) share: transformers' classes built from a
config derived from tensor shapes (nothing fetched from a hub), a synthetic token batch
(fp8stream/families/tokens.py), and the identity mapping: ComfyUI's text-encoder files use
transformers' own parameter names (the model prefix removed), so `convert` only adds the
aliases of tied tables.
"""

from __future__ import annotations

import os
from typing import Mapping


def transformers_module():
    """transformers, quiet and offline (a config is never fetched)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers.utils import logging

    logging.set_verbosity_error()
    return transformers


def build(model: str, config: str, cfg: Mapping, **init) -> object:
    """transformers.<model>(transformers.<config>(**cfg), **init)."""
    t = transformers_module()
    return getattr(t, model)(getattr(t, config)(**cfg), **init)


def renamed(state: dict, renames: Mapping[str, str]) -> dict:
    """The stand-in with each key's prefix renamed (the first that matches), others as they are."""
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def first(shapes: Mapping[str, tuple[int, ...]], *names: str) -> tuple[int, ...]:
    """The shape of the first of `names` the file has (KeyError naming them all when none)."""
    for n in names:
        if n in shapes:
            return tuple(shapes[n])
    raise KeyError(" or ".join(names))
