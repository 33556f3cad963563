"""Which model family a checkpoint is, from its key names: the one detector (presets, the
producer graph of `--method simulate`, stats name matching). Names may carry a model prefix."""

from __future__ import annotations

import re
from typing import Iterable

from fp8stream.formats.prefixes import bare_name

_WAN_BLOCK = re.compile(r"blocks\.\d+\.(self_attn|cross_attn)\.")
_BERT_LAYER = re.compile(r"encoder\.layer\.\d+\.attention\.self\.")


def detect_family(names: Iterable[str]) -> str | None:
    """flux, sd3, wan or bert (BERT-style encoders), or None for anything else."""
    bare = [bare_name(n) for n in names]
    if any(n.startswith(("double_blocks.", "single_blocks.")) for n in bare):
        return "flux"
    if any(n.startswith("joint_blocks.") for n in bare):
        return "sd3"
    if any(_WAN_BLOCK.match(n) for n in bare):
        return "wan"
    if any(_BERT_LAYER.search(n) for n in bare):
        return "bert"
    return None
