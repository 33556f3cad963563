"""Qwen-Image (and its edit models): ComfyUI's files use diffusers' names."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family
from fp8stream.families.spec import TensorSpec, linear, norms

PRESETS = (  # diffusers' names
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_text_embed.*", "embedder"),
    ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)

# ComfyUI tests txt_norm


# For scripts/bench.py --arch (`families.inventory`):
# Qwen-Image at real size (ComfyUI's files use diffusers' names): hidden 3072 (24 heads of
# 128), 60 joint blocks, MLP 12288, Qwen2.5-VL text states of 3584, 2x2 patches of 16 channels
# (20B parameters). Block linears (modulation included) in FP8, embedders and output in BF16.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 3072, 12288, 128
    n = 60 if blocks is None else blocks
    specs = norms("txt_norm.weight", width=3584) + linear("img_in", d, 64, False) + linear("txt_in", d, 3584, False)
    specs += linear("time_text_embed.timestep_embedder.linear_1", d, 256, False)
    specs += linear("time_text_embed.timestep_embedder.linear_2", d, d, False)
    for i in range(n):
        p = f"transformer_blocks.{i}"
        for s in ("img", "txt"):
            specs += linear(f"{p}.{s}_mod.1", 6 * d, d, True)
            specs += linear(f"{p}.{s}_mlp.net.0.proj", mlp, d, True) + linear(f"{p}.{s}_mlp.net.2", d, mlp, True)
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            specs += linear(f"{p}.attn.{proj}", d, d, True)
        specs += norms(*(f"{p}.attn.{n}.weight" for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")),
                       width=head)
    return specs + linear("norm_out.linear", 2 * d, d, False) + linear("proj_out", 64, d, False)


FAMILY = Family(
    "qwen-image", "dit",
    DetectionRule(("txt_norm.weight",), "ours (ComfyUI: txt_norm)", "img_in.weight", ("transformer_blocks.",),
                  ("transformer_blocks.0.img_mod.1.weight",)),
    presets=PRESETS,
    inventories=(("qwen-image", inventory),))
