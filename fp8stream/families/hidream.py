"""HiDream-I1 (diffusers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family
from fp8stream.families.spec import TensorSpec, linear, norms

PRESETS = (  # diffusers' names
    ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("p_embedder.*", "embedder"),
    ("caption_projection.*", "embedder"), ("final_layer.*", "final projection"),
)


# For scripts/bench.py --arch (`families.inventory`):
# HiDream-I1 at real size (ComfyUI's files use diffusers' names): width 2560 (20 heads of 128),
# 16 double and 32 single blocks, each feed-forward a mixture of 4 routed experts (6912 wide) and
# a shared one (3584), T5 and Llama-3.1 states of 4096, pooled CLIP 2048, 2x2 patches of 16
# channels (17B parameters). Block linears in FP8; router gates, embedders and caption
# projections in BF16.


def _ffn(p: str, d: int, hidden: int) -> list[TensorSpec]:
    return [s for w, shape in (("w1", (hidden, d)), ("w2", (d, hidden)), ("w3", (hidden, d)))
            for s in linear(f"{p}.{w}", *shape, True, bias=False)]


def _block(p: str, d: int, double: bool) -> list[TensorSpec]:
    specs = linear(f"{p}.adaLN_modulation.1", (12 if double else 6) * d, d, True)
    for side in ("", "_t") if double else ("",):
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            specs += linear(f"{p}.attn1.{proj}{side}", d, d, True)
        specs += norms(f"{p}.attn1.q_rms_norm{side}.weight", f"{p}.attn1.k_rms_norm{side}.weight", width=d)
    specs += _ffn(f"{p}.ff_i.shared_experts", d, 3584) + [TensorSpec(f"{p}.ff_i.gate.weight", (4, d), False)]
    for e in range(4):
        specs += _ffn(f"{p}.ff_i.experts.{e}", d, 6912)
    return specs + (_ffn(f"{p}.ff_t", d, 6912) if double else [])


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d = 2560
    double = 16 if blocks is None else blocks
    single = 32 if blocks is None else 2 * blocks
    specs = linear("t_embedder.timestep_embedder.linear_1", d, 256, False)
    specs += linear("t_embedder.timestep_embedder.linear_2", d, d, False)
    specs += linear("p_embedder.pooled_embedder.linear_1", d, 2048, False)
    specs += linear("p_embedder.pooled_embedder.linear_2", d, d, False)
    specs += linear("x_embedder.proj", d, 64, False)
    for i in range(double):
        specs += _block(f"double_stream_blocks.{i}.block", d, True)
    for i in range(single):
        specs += _block(f"single_stream_blocks.{i}.block", d, False)
    for i in range(double + single + 1):  # one per block (Llama states), the last for T5
        specs += linear(f"caption_projection.{i}.linear", d, 4096, False, bias=False)
    return (specs + linear("final_layer.adaLN_modulation.1", 2 * d, d, False)
            + linear("final_layer.linear", 64, d, False))


FAMILY = Family(
    "hidream", "dit",
    DetectionRule(("double_stream_blocks.0.block.adaLN_modulation.1.bias",), "diffusers: hidream",
                  "x_embedder.proj.weight", ("double_stream_blocks.", "single_stream_blocks."),
                  ("double_stream_blocks.0.block.adaLN_modulation.1.weight",)),
    presets=PRESETS,
    inventories=(("hidream", inventory),))
