"""HunyuanVideo 1.5 (ComfyUI's names: q/k/v stored apart)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput

PRESETS = (
    ("img_in.*", "embedder"), ("time_in.*", "embedder"), ("time_r_in.*", "embedder"),
    ("txt_in.*", "text embedder (token refiner)"), ("byt5_in.*", "embedder"), ("vision_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries HunyuanVideo's token refiner: tried before it
FAMILY = Family(
    "hunyuan-video-1.5", "dit",
    DetectionRule(("cond_type_embedding.weight",), "ours (ComfyUI: use_cond_type_embedding)",
                  "img_in.proj.weight", ("double_blocks.", "single_blocks."), ("vision_in.proj.0.weight",)),
    presets=PRESETS, edge_blocks=r"^double_blocks\.(\d+)\.",
    shared_inputs=(SharedInput(".*", ("img_attn_q", "img_attn_k", "img_attn_v")),  # q/k/v stored apart
                   SharedInput(".*", ("txt_attn_q", "txt_attn_k", "txt_attn_v"))))
