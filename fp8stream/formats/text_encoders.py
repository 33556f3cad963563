"""Text-encoder layers, recognised by their key names (ComfyUI runs them weight-only, docs/comfyui.md).

We calibrate them all the same (other runtimes use the scales) and say in the report that
ComfyUI will not.
"""

from __future__ import annotations

import re

from fp8stream.names.prefixes import split_prefix

_TEXT_ENCODER_RE = re.compile(
    r"(^|\.)encoder\.block\.\d+\.layer\.\d+\."  # T5 / UMT5
    r"|(^|\.)encoder\.layer\.\d+\.(attention|intermediate|output)\."  # BERT-style
    r"|(^|\.)text_model\.encoder\.layers\.\d+\."  # CLIP
    r"|(^|\.)model\.layers\.\d+\.(self_attn|mlp)\."  # LLM encoders (Llama, Qwen, Gemma, Mistral)
)


def is_text_encoder_layer(name: str) -> bool:
    prefix, bare = split_prefix(name)
    return (prefix.startswith(("text_encoders.", "cond_stage_model.")) or bool(_TEXT_ENCODER_RE.search(name))
            or bare == "text_projection")  # CLIP-G's projection of the pooled output


TEXT_ENCODER_NOTE = "text encoder: ComfyUI runs it weight-only whatever the file says (scale for other runtimes)"
