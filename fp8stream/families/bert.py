"""BERT-style text encoders (transformers' names)."""

from __future__ import annotations

import re

from fp8stream.families.family import DetectionRule, Family
from fp8stream.families.graph_types import Act, Norm, ProducerGraph, Source

# The producer graph of the bound (`--method simulate`): where each linear's input comes from.
# BERT/T5:     encoder.layer.N.attention.self.query/key/value  affine LayerNorm (previous layer's
#                                                              output.LayerNorm, or embeddings.LayerNorm)
#              encoder.layer.N.attention.output.dense ....... attention mix of v (attention.self.value)
#              encoder.layer.N.intermediate.dense ........... affine LayerNorm attention.output.LayerNorm
#              encoder.layer.N.output.dense ................. GELU(intermediate.dense)


def sources(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"(.*?)encoder\.layer\.(\d+)\."
                     r"(attention\.self\.(?:query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)",
                     name)
    if not m:
        return None
    pre, n, what = m.groups()
    n = int(n)
    p = f"{pre}encoder.layer.{n}."
    if what.startswith("attention.self."):
        ln = f"{pre}encoder.layer.{n - 1}.output.LayerNorm" if n > 0 else f"{pre}embeddings.LayerNorm"
        return Norm(ln + ".weight", ln + ".bias")
    if what == "attention.output.dense":
        return Act("attn", p + "attention.self.value")
    if what == "intermediate.dense":
        ln = p + "attention.output.LayerNorm"
        return Norm(ln + ".weight", ln + ".bias")
    return Act("gelu", p + "intermediate.dense")


FAMILY = Family(
    "bert", "text", DetectionRule(("encoder.layer.0.attention.self.query.weight",), "ours", "", ("encoder.layer.",)),
    layer_pattern=r"(^|\.)encoder\.layer\.\d+\.(attention|intermediate|output)\.",
    graph=ProducerGraph(sources))
