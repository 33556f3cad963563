"""HiDream-I1 (ComfyUI's files use diffusers' names: double_stream_blocks.N.block.attn1.to_q,
ff_i.experts.E.w1, caption_projection.N.linear, ...; diffusers' converter only drops the prefix).

diffusers' HiDreamImageTransformer2DModel takes latents [B, C, H, W] (2x2 patches), the
timestep in [0, 1000], T5 states, pooled CLIP vectors, and a stack of Llama hidden states of
which each block reads the one `llama_layers` names: every block reads the same synthetic
stack entry here. The q/k norms span the whole width, so the heads are not in the shapes:
HiDream's are 128 wide (a width that is not a multiple of 128, a small test model, gets heads
of SMALL_HEAD_DIM). Each MoE feed-forward routes every token to NUM_ACTIVATED of its experts
(HiDream's 2, not in the shapes): an expert no synthetic token reaches gets the bound method's
answer, reported per layer.
"""

from __future__ import annotations

from typing import Mapping

from fp8stream.families.detect import count_blocks
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "hidream"
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
    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], h * PATCH, w * PATCH)
    x0, noise = plan.randn(*shape), plan.randn(*shape)
    t = plan.timesteps()
    t5, llama = cfg["caption_channels"]
    return {
        "hidden_states": plan.noised(x0, noise, t),
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
