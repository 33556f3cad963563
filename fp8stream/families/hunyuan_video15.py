"""HunyuanVideo 1.5 (ComfyUI's names: q/k/v stored apart)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

# it carries HunyuanVideo's token refiner: tried before it
FAMILY = Family(
    "hunyuan-video-1.5", "dit",
    DetectionRule(("cond_type_embedding.weight",), "ours (ComfyUI: use_cond_type_embedding)",
                  "img_in.proj.weight", ("double_blocks.", "single_blocks."), ("vision_in.proj.0.weight",)))
