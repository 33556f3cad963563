"""Wan 2.x (original key names): the source of each linear's input; see graph.py's table."""

from __future__ import annotations

import re

from fp8stream.calibration.sources import Act, AdaLN, External, Norm, Sinusoid, Source, Vec


def sources(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(self_attn|cross_attn)\.(q|k|v|o)", name)
    if m:
        b, kind, what = m.groups()
        p = f"blocks.{b}."
        if what == "o":
            return Act("attn", f"{p}{kind}.v")
        if kind == "self_attn":
            return AdaLN("time_projection.1", 0, 1, 6, extra_bias=p + "modulation")
        if what == "q":
            return Norm(p + "norm3.weight", p + "norm3.bias")
        return Act("id", "text_embedding.2")
    m = re.fullmatch(r"blocks\.(\d+)\.ffn\.(0|2)", name)
    if m:
        b, what = m.groups()
        if what == "0":
            return AdaLN("time_projection.1", 3, 4, 6, extra_bias=f"blocks.{b}.modulation")
        return Act("gelu", f"blocks.{b}.ffn.0")
    table = {
        "time_embedding.0": Sinusoid(),
        "time_embedding.2": Act("silu", "time_embedding.0"),
        "time_projection.1": Vec("wan"),
        "text_embedding.0": External("text-encoder states"),
        "text_embedding.2": Act("gelu", "text_embedding.0"),
        "head.head": External("head input (AdaLN of head.modulation: not modelled)"),
    }
    return table.get(name)


VEC_TERMS = [("time", "time_embedding.0", "time_embedding.2")]
