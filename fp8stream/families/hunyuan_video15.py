"""HunyuanVideo 1.5 (ComfyUI's names: q/k/v stored apart)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.spec import TensorSpec, linear as _linear

PRESETS = (
    ("img_in.*", "embedder"), ("time_in.*", "embedder"), ("time_r_in.*", "embedder"),
    ("txt_in.*", "text embedder (token refiner)"), ("byt5_in.*", "embedder"), ("vision_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries HunyuanVideo's token refiner: tried before it


# HunyuanVideo 1.5 inventory at real size (ComfyUI's repack: fused q/k/v), for scripts/bench.py.
#
# 8.3B parameters: width 2048 (16 heads of 128), 54 dual-stream blocks, MLP 8192; latent input
# 65 channels (32 + 32 conditioning + 1 mask), output 32; Qwen2.5-VL text 3584 wide through a
# 2-block token refiner, ByT5 glyph text 1472 wide, SigLIP image features 1152 wide. The block
# linears are FP8; embedders, the token refiner and the final layer BF16.


def t2v_720p(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 2048, 8192, 128
    n = 54 if blocks is None else blocks
    specs = [TensorSpec("img_in.proj.weight", (d, 65, 1, 1, 1), False), TensorSpec("img_in.proj.bias", (d,), False),
             TensorSpec("cond_type_embedding.weight", (3, d), False)]
    specs += _linear("time_in.mlp.0", d, 256, False) + _linear("time_in.mlp.2", d, d, False)
    specs += _linear("txt_in.input_embedder", d, 3584, False)
    specs += _linear("txt_in.t_embedder.mlp.0", d, 256, False) + _linear("txt_in.t_embedder.mlp.2", d, d, False)
    specs += _linear("txt_in.c_embedder.linear_1", d, 3584, False) + _linear("txt_in.c_embedder.linear_2", d, d, False)
    for i in range(2):
        p = f"txt_in.individual_token_refiner.blocks.{i}."
        specs += [TensorSpec(p + f"{n_}.{w}", (d,), False) for n_ in ("norm1", "norm2") for w in ("weight", "bias")]
        specs += _linear(p + "self_attn_qkv", 3 * d, d, False) + _linear(p + "self_attn_proj", d, d, False)
        specs += _linear(p + "mlp.fc1", 4 * d, d, False) + _linear(p + "mlp.fc2", d, 4 * d, False)
        specs += _linear(p + "adaLN_modulation.1", 2 * d, d, False)
    specs += [TensorSpec("byt5_in.layernorm.weight", (1472,), False),
              TensorSpec("byt5_in.layernorm.bias", (1472,), False)]
    specs += _linear("byt5_in.fc1", 2048, 1472, False) + _linear("byt5_in.fc2", 2048, 2048, False)
    specs += _linear("byt5_in.fc3", d, 2048, False)
    specs += [TensorSpec(f"vision_in.proj.{i}.{w}", (s,), False)
              for i, s in ((0, 1152), (4, d)) for w in ("weight", "bias")]
    specs += _linear("vision_in.proj.1", 1152, 1152, False) + _linear("vision_in.proj.3", d, 1152, False)
    for i in range(n):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            specs += _linear(p + "mod.linear", 6 * d, d, True) + _linear(p + "attn_qkv", 3 * d, d, True)
            specs += [TensorSpec(p + "attn_q_norm.weight", (head,), False),
                      TensorSpec(p + "attn_k_norm.weight", (head,), False)]
            specs += _linear(p + "attn_proj", d, d, True)
            specs += _linear(p + "mlp.fc1", mlp, d, True) + _linear(p + "mlp.fc2", d, mlp, True)
    specs += _linear("final_layer.linear", 32, d, False) + _linear("final_layer.adaLN_modulation.1", 2 * d, d, False)
    return specs


FAMILY = Family(
    "hunyuan-video-1.5", "dit",
    DetectionRule(("cond_type_embedding.weight",), "ours (ComfyUI: use_cond_type_embedding)",
                  "img_in.proj.weight", ("double_blocks.", "single_blocks."), ("vision_in.proj.0.weight",)),
    presets=PRESETS, edge_blocks=r"^double_blocks\.(\d+)\.",
    shared_inputs=(SharedInput(".*", ("img_attn_q", "img_attn_k", "img_attn_v")),  # q/k/v stored apart
                   SharedInput(".*", ("txt_attn_q", "txt_attn_k", "txt_attn_v"))),
    inventories=(("hunyuan-video-1.5", t2v_720p),))
