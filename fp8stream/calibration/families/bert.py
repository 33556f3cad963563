"""BERT / T5-style encoders: the source of each linear's input; see graph.py's table."""

from __future__ import annotations

import re

from fp8stream.calibration.sources import Act, Norm, Source


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


VEC_TERMS: list[tuple[str, str, str]] = []
