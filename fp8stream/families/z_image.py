"""Z-Image (Lumina 2's NextDiT layout)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.next_dit import PRESETS, next_dit_block, next_dit_inventory, next_dit_value_sources
from fp8stream.families.spec import TensorSpec

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


# For scripts/bench.py --arch (`families.inventory`):
# Z-Image (Turbo) at real size (original / ComfyUI names): dim 3840 (30 heads of 128), 30
# layers plus 2 noise and 2 context refiner blocks, fused qkv, gated FFN 10240, Qwen3 caption
# states of 2560, 2x2 patches of 16 channels (6B parameters). Block linears in FP8.


def _block(p: str, d: int, modulated: bool) -> list[TensorSpec]:
    return next_dit_block(p, d, 3 * d, 10240, 128, (4 * d, 256) if modulated else None, "adaLN_modulation.0")


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d = 3840
    pads = [TensorSpec("x_pad_token", (1, d), False), TensorSpec("cap_pad_token", (1, d), False)]
    return pads + next_dit_inventory(d, 30 if blocks is None else blocks, 2560, 256, _block)


# The forward pass's model code (`--method forward`):
# Z-Image (original / ComfyUI names: x_embedder, final_layer, t_embedder.mlp, cap_embedder,
# noise_refiner / context_refiner / layers.N with a fused attention.qkv and feed_forward.w1-3).
#
# diffusers' ZImageTransformer2DModel takes a list of per-sample latents [C, frames, H, W] and of
# caption features [tokens, width], and a time that runs the other way: 1 - sigma (its pipeline
# passes (1000 - t) / 1000; the model multiplies by t_scale 1000). Patches are 2x2, one frame.
# The converter splits qkv in three equal parts (as many key/value heads as query heads).


PATCH = 2


def rope_axes(head_dim: int) -> list[int]:
    """[32, 48, 48] for Z-Image's head_dim 128; the same proportions, even sizes, otherwise."""
    first = (head_dim // 4) & ~1
    rest = ((head_dim - first) // 2) & ~1
    return [head_dim - 2 * rest, rest, rest]


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    dim, patch_in = shapes["x_embedder.weight"]
    head_dim = shapes["layers.0.attention.q_norm.weight"][0]
    siglip = shapes.get("siglip_embedder.1.weight")
    return {
        "all_patch_size": (PATCH,),
        "all_f_patch_size": (1,),
        "in_channels": patch_in // (PATCH * PATCH),
        "dim": dim,
        "n_layers": count_blocks(shapes, "layers."),
        "n_refiner_layers": count_blocks(shapes, "noise_refiner."),
        "n_heads": dim // head_dim,
        "n_kv_heads": dim // head_dim,
        "cap_feat_dim": shapes["cap_embedder.1.weight"][1],
        "siglip_feat_dim": siglip[1] if siglip else None,
        "axes_dims": rope_axes(head_dim),
    }


def model_class():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    from fp8stream.families.samples import grid, noised_latents

    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], 1, h * PATCH, w * PATCH)
    latents, t = noised_latents(plan, *shape)
    return {
        "x": list(latents.unbind(0)),
        "t": 1.0 - t,  # Z-Image's time runs from noise (0) to clean (1)
        "cap_feats": list(plan.text(cfg["cap_feat_dim"]).unbind(0)),
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    return next_dit_value_sources(cfg["n_layers"], cfg["n_refiner_layers"], "attention")


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("all_final_layer.2-1.adaLN_modulation.1", "final_layer.adaLN_modulation.1"),
    ("all_final_layer.2-1.linear", "final_layer.linear"),
    ("all_x_embedder.2-1", "x_embedder"),
    ("cap_embedder.1", "cap_embedder.1"),
    ("context_refiner.{}.attention.to_k", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.attention.to_out.0", "context_refiner.{}.attention.out"),
    ("context_refiner.{}.attention.to_q", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.attention.to_v", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.feed_forward.w1", "context_refiner.{}.feed_forward.w1"),
    ("context_refiner.{}.feed_forward.w2", "context_refiner.{}.feed_forward.w2"),
    ("context_refiner.{}.feed_forward.w3", "context_refiner.{}.feed_forward.w3"),
    ("layers.{}.adaLN_modulation.0", "layers.{}.adaLN_modulation.0"),
    ("layers.{}.attention.to_k", "layers.{}.attention.qkv"),
    ("layers.{}.attention.to_out.0", "layers.{}.attention.out"),
    ("layers.{}.attention.to_q", "layers.{}.attention.qkv"),
    ("layers.{}.attention.to_v", "layers.{}.attention.qkv"),
    ("layers.{}.feed_forward.w1", "layers.{}.feed_forward.w1"),
    ("layers.{}.feed_forward.w2", "layers.{}.feed_forward.w2"),
    ("layers.{}.feed_forward.w3", "layers.{}.feed_forward.w3"),
    ("noise_refiner.{}.adaLN_modulation.0", "noise_refiner.{}.adaLN_modulation.0"),
    ("noise_refiner.{}.attention.to_k", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.attention.to_out.0", "noise_refiner.{}.attention.out"),
    ("noise_refiner.{}.attention.to_q", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.attention.to_v", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.feed_forward.w1", "noise_refiner.{}.feed_forward.w1"),
    ("noise_refiner.{}.feed_forward.w2", "noise_refiner.{}.feed_forward.w2"),
    ("noise_refiner.{}.feed_forward.w3", "noise_refiner.{}.feed_forward.w3"),
    ("t_embedder.mlp.{}", "t_embedder.mlp.{}"),
)
# end of derived renames


FAMILY = Family(  # it carries Lumina 2's cap_embedder: tried before it
    "z-image", "dit",
    DetectionRule(("layers.0.adaLN_modulation.0.weight",), "diffusers: z-image-turbo", "x_embedder.weight",
                  ("layers.",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),),
    inventories=(("z-image", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),  # gated FFN: gate, up
    diffusers_renames=DIFFUSERS_RENAMES)
