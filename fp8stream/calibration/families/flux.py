"""Flux (BFL key names): the source of each linear's input; see graph.py's table."""

from __future__ import annotations

import re

from fp8stream.calibration.sources import Act, AdaLN, Concat, External, Sinusoid, Source, Vec, dit_stream


def sources(name: str, has: set[str]) -> Source | None:
    if m := re.fullmatch(r"(double_blocks\.\d+\.(?:img|txt)_)(mod\.lin|attn\.qkv|attn\.proj|mlp\.0|mlp\.2)", name):
        return dit_stream("flux", m.group(1), m.group(2), ("mod.lin", "attn.qkv", "mlp.0"), 6)
    m = re.fullmatch(r"single_blocks\.(\d+)\.(modulation\.lin|linear1|linear2)", name)
    if m:
        b, what = m.groups()
        p = f"single_blocks.{b}."
        if what == "modulation.lin":
            return Vec("flux")
        if what == "linear1":
            return AdaLN(p + "modulation.lin", 0, 1, 3)
        return Concat((Act("attn", p + "linear1", "qkv_v"), Act("gelu", p + "linear1", "mlp")))
    table = {
        "final_layer.adaLN_modulation.1": Vec("flux"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "time_in.in_layer": Sinusoid(),
        "guidance_in.in_layer": Sinusoid(),
        "time_in.out_layer": Act("silu", "time_in.in_layer"),
        "guidance_in.out_layer": Act("silu", "guidance_in.in_layer"),
        "vector_in.out_layer": Act("silu", "vector_in.in_layer"),
        "vector_in.in_layer": External("pooled text embedding"),
        "img_in": External("image latents"),
        "txt_in": External("text-encoder states"),
    }
    return table.get(name)


VEC_TERMS = [("time", "time_in.in_layer", "time_in.out_layer"),
             ("guidance", "guidance_in.in_layer", "guidance_in.out_layer"),
             ("pooled", "vector_in.in_layer", "vector_in.out_layer")]
