"""Which model family a checkpoint is, from its key names: the one detector (presets, the
producer graph of `--method simulate`, stats name matching). Names may carry a model prefix."""

from __future__ import annotations

import re
from typing import Iterable

from fp8stream.formats.prefixes import bare_name

_WAN_BLOCK = re.compile(r"blocks\.\d+\.(self_attn|cross_attn)\.")
_BERT_LAYER = re.compile(r"encoder\.layer\.\d+\.attention\.self\.")
_T5_BLOCK = re.compile(r"encoder\.block\.\d+\.layer\.0\.SelfAttention\.")  # T5, UMT5
_CLIP_LAYER = re.compile(r"text_model\.encoder\.layers\.\d+\.self_attn\.")  # CLIP-L/G text
_LLM_LAYER = re.compile(r"(model\.)?layers\.\d+\.self_attn\.q_proj\.")  # Qwen, Llama/Mistral, Gemma


def detect_family(names: Iterable[str]) -> str | None:
    """flux, sd3, wan; bert (BERT-style encoders), t5 (T5, UMT5 encoders), clip (CLIP text
    encoders), llm (decoder-style text encoders); or None for anything else."""
    bare = [bare_name(n) for n in names]
    if any(n.startswith(("double_blocks.", "single_blocks.")) for n in bare):
        return "flux"
    if any(n.startswith("joint_blocks.") for n in bare):
        return "sd3"
    if any(_WAN_BLOCK.match(n) for n in bare):
        return "wan"
    if any(_BERT_LAYER.search(n) for n in bare):
        return "bert"
    if any(_T5_BLOCK.match(n) for n in bare):
        return "t5"
    if any(_CLIP_LAYER.match(n) for n in bare):
        return "clip"
    if any(_LLM_LAYER.match(n) for n in bare):
        return "llm"
    return None
