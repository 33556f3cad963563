"""LLM text encoders (Qwen, Llama/Mistral, Gemma; transformers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

# the extra key: the layers under text_encoders.X.transformer.
FAMILY = Family(
    "llm", "text",
    DetectionRule(("layers.0.self_attn.q_proj.weight",), "ours (Qwen, Llama/Mistral, Gemma)", "", ("layers.",),
                  ("model.layers.0.self_attn.q_proj.weight",)),
    layer_pattern=r"(^|\.)model\.layers\.\d+\.(self_attn|mlp)\.")  # Llama, Qwen, Gemma, Mistral
