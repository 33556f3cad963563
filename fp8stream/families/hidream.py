"""HiDream-I1 (diffusers' names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.spec import TensorSpec, linear, norms

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

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


# The forward pass's model code (`--method forward`):
# HiDream-I1 (ComfyUI's files use diffusers' names: double_stream_blocks.N.block.attn1.to_q,
# ff_i.experts.E.w1, caption_projection.N.linear, ...; diffusers' converter only drops the prefix).
#
# diffusers' HiDreamImageTransformer2DModel takes latents [B, C, H, W] (2x2 patches), the
# timestep in [0, 1000], T5 states, pooled CLIP vectors, and a stack of Llama hidden states of
# which each block reads the one `llama_layers` names: every block reads the same synthetic
# stack entry here. The q/k norms span the whole width, so the heads are not in the shapes:
# HiDream's are 128 wide (a width that is not a multiple of 128, a small test model, gets heads
# of SMALL_HEAD_DIM). Each MoE feed-forward routes every token to NUM_ACTIVATED of its experts
# (HiDream's 2, not in the shapes): an expert no synthetic token reaches gets the bound method's
# answer, reported per layer.


PATCH = 2


HEAD_DIM, SMALL_HEAD_DIM = 128, 16


NUM_ACTIVATED = 2


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, patch_in = shapes["x_embedder.proj.weight"]
    head_dim = HEAD_DIM if inner % HEAD_DIM == 0 else SMALL_HEAD_DIM
    layers, single = count_blocks(shapes, "double_stream_blocks."), count_blocks(shapes, "single_stream_blocks.")
    t5 = shapes[f"caption_projection.{layers + single}.linear.weight"][1]
    return {
        "patch_size": PATCH,
        "in_channels": patch_in // (PATCH * PATCH),
        "out_channels": shapes["final_layer.linear.weight"][0] // (PATCH * PATCH),
        "num_layers": layers,
        "num_single_layers": single,
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "caption_channels": [t5, shapes["caption_projection.0.linear.weight"][1]],
        "text_emb_dim": shapes["p_embedder.pooled_embedder.linear_1.weight"][1],
        "num_routed_experts": count_blocks(shapes, "double_stream_blocks.0.block.ff_i.experts."),
        "num_activated_experts": NUM_ACTIVATED,
        "axes_dims_rope": (head_dim // 2, head_dim // 4, head_dim // 4),  # HiDream: (64, 32, 32)
        "llama_layers": [0] * (layers + single),  # every block reads synthetic stack entry 0
    }


def model_class():
    from diffusers import HiDreamImageTransformer2DModel

    return HiDreamImageTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_hidream_transformer_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    from fp8stream.families.samples import grid, noised_latents

    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], h * PATCH, w * PATCH)
    latents, t = noised_latents(plan, *shape)
    t5, llama = cfg["caption_channels"]
    return {
        "hidden_states": latents,
        "timesteps": t * 1000.0,  # HiDream takes 0-1000
        "encoder_hidden_states_t5": plan.text(t5),
        "encoder_hidden_states_llama3": plan.text(llama).unsqueeze(0),
        "pooled_embeds": plan.pooled(cfg["text_emb_dim"]),
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Double blocks: joint attention, both output projections mix both streams' values;
    single blocks: one attention over all tokens."""
    out = {}
    for i in range(cfg["num_layers"]):
        a = f"double_stream_blocks.{i}.block.attn1."
        for proj in ("to_out", "to_out_t"):
            out[a + proj] = [[a + "to_v", a + "to_v_t"]]
    for i in range(cfg["num_single_layers"]):
        a = f"single_stream_blocks.{i}.block.attn1."
        out[a + "to_out"] = [[a + "to_v"]]
    return out


FAMILY = Family(
    "hidream", "dit",
    DetectionRule(("double_stream_blocks.0.block.adaLN_modulation.1.bias",), "diffusers: hidream",
                  "x_embedder.proj.weight", ("double_stream_blocks.", "single_stream_blocks."),
                  ("double_stream_blocks.0.block.adaLN_modulation.1.weight",)),
    presets=PRESETS,
    inventories=(("hidream", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources))
