"""T5 and UMT5 encoders (transformers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput

FAMILY = Family(
    "t5", "text",
    DetectionRule(("encoder.block.0.layer.0.SelfAttention.q.weight",), "ours (T5, UMT5)", "shared.weight",
                  ("encoder.block.",), name_prefixes=("encoder.block.",)),
    layer_pattern=r"(^|\.)encoder\.block\.\d+\.layer\.\d+\.",  # T5 / UMT5
    shared_inputs=(SharedInput(r"(^|.*\.)EncDecAttention$", ("k", "v")),  # the decoder's cross-attention
                   SharedInput(".*", ("wi_0", "wi_1"))),  # gated FFN
    cross_attention=("EncDecAttention",))
