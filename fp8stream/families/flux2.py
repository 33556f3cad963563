"""FLUX.2 (dev and klein): Flux's double/single blocks with shared modulations."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

# dev is 6144 wide (8+48 blocks); klein 4B 3072 (5+20), klein 9B 4096 (8+24)
WIDTHS = {6144: "flux2-dev", 3072: "flux2-klein-4b", 4096: "flux2-klein-9b"}


def variant(bare, width, blocks) -> str:
    return WIDTHS.get(width, "flux2")


PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("guidance_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries Flux's double_blocks: tried before Flux
FAMILY = Family(
    "flux2", "dit",
    DetectionRule(("single_stream_modulation.lin.weight",), "diffusers: flux2", "img_in.weight",
                  ("double_blocks.", "single_blocks."), ("double_stream_modulation_img.lin.weight",)),
    variant,
    presets=PRESETS)
