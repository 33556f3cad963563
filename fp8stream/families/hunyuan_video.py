"""HunyuanVideo (detected only: no presets or model code yet)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

# it carries Flux's double_blocks, so it comes before Flux (whose layer-name keys it would match)
FAMILY = Family(
    "hunyuan-video", "dit",
    DetectionRule(("txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias",),
                  "diffusers: hunyuan-video", "img_in.proj.weight", ("double_blocks.", "single_blocks."),
                  ("txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.weight",)))
