"""SD3 / MMDiT (ComfyUI key names): the source of each linear's input; see graph.py's table."""

from __future__ import annotations

import re

from fp8stream.calibration.sources import Act, AdaLN, External, Sinusoid, Source, Vec, dit_stream


def sources(name: str, has: set[str]) -> Source | None:
    if m := re.fullmatch(r"(joint_blocks\.\d+\.(?:x_block|context_block)\.)"
                         r"(adaLN_modulation\.1|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)", name):
        p = m.group(1)
        # a pre-only context block has 2 chunks (shift, scale); the others 6
        chunks = 6 if (p + "mlp.fc1") in has or (p + "attn.proj") in has else 2
        return dit_stream("sd3", p, m.group(2), ("adaLN_modulation.1", "attn.qkv", "mlp.fc1"), chunks)
    table = {
        "final_layer.adaLN_modulation.1": Vec("sd3"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "t_embedder.mlp.0": Sinusoid(),
        "t_embedder.mlp.2": Act("silu", "t_embedder.mlp.0"),
        "y_embedder.mlp.0": External("pooled text embedding"),
        "y_embedder.mlp.2": Act("silu", "y_embedder.mlp.0"),
        "context_embedder": External("text-encoder states"),
    }
    return table.get(name)


VEC_TERMS = [("time", "t_embedder.mlp.0", "t_embedder.mlp.2"), ("pooled", "y_embedder.mlp.0", "y_embedder.mlp.2")]
