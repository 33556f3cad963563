"""FLUX.2 (dev and klein): Flux's double/single blocks with shared modulations."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family
from fp8stream.families.spec import TensorSpec, linear, norms

# dev is 6144 wide (8+48 blocks); klein 4B 3072 (5+20), klein 9B 4096 (8+24)
WIDTHS = {6144: "flux2-dev", 3072: "flux2-klein-4b", 4096: "flux2-klein-9b"}


def variant(bare, width, blocks) -> str:
    return WIDTHS.get(width, "flux2")


PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("guidance_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries Flux's double_blocks: tried before Flux


# For scripts/bench.py --arch (`families.inventory`):
# Flux.2-dev at real size (BFL / ComfyUI names): hidden 6144 (48 heads of 128), gated MLP
# 18432, 8 double and 48 single blocks, 128 latent channels, Mistral text states of 15360 (32B
# parameters). Block linears and the shared stream modulations in FP8, no biases.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 6144, 18432, 128
    double = 8 if blocks is None else blocks
    single = 48 if blocks is None else 2 * blocks
    specs = linear("img_in", d, 128, False, bias=False) + linear("txt_in", d, 15360, False, bias=False)
    for emb in ("time_in", "guidance_in"):
        specs += linear(f"{emb}.in_layer", d, 256, False, bias=False)
        specs += linear(f"{emb}.out_layer", d, d, False, bias=False)
    specs += linear("double_stream_modulation_img.lin", 6 * d, d, True, bias=False)
    specs += linear("double_stream_modulation_txt.lin", 6 * d, d, True, bias=False)
    specs += linear("single_stream_modulation.lin", 3 * d, d, True, bias=False)
    for i in range(double):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            specs += linear(f"{p}_attn.qkv", 3 * d, d, True, bias=False)
            specs += linear(f"{p}_attn.proj", d, d, True, bias=False)
            specs += norms(f"{p}_attn.norm.query_norm.scale", f"{p}_attn.norm.key_norm.scale", width=head)
            specs += linear(f"{p}_mlp.0", 2 * mlp, d, True, bias=False) + linear(f"{p}_mlp.2", d, mlp, True, bias=False)
    for i in range(single):
        p = f"single_blocks.{i}"
        specs += linear(f"{p}.linear1", 3 * d + 2 * mlp, d, True, bias=False)
        specs += linear(f"{p}.linear2", d, d + mlp, True, bias=False)
        specs += norms(f"{p}.norm.query_norm.scale", f"{p}.norm.key_norm.scale", width=head)
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False, bias=False)
    return specs + linear("final_layer.linear", 128, d, False, bias=False)


FAMILY = Family(
    "flux2", "dit",
    DetectionRule(("single_stream_modulation.lin.weight",), "diffusers: flux2", "img_in.weight",
                  ("double_blocks.", "single_blocks."), ("double_stream_modulation_img.lin.weight",)),
    variant,
    presets=PRESETS,
    inventories=(("flux2", inventory),))
