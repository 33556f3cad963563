"""Cosmos 1.0 and Cosmos Predict2."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, holds
from fp8stream.families.spec import TensorSpec, linear as _linear


def variant(bare, width, blocks) -> str:
    """Cosmos 1.0 nests its blocks (blocks.blockN.blocks.M.block); Predict2 2B is 2048 wide, 14B 5120."""
    if holds(bare, "blocks.block0.blocks.0.block.attn.to_q.0.weight"):
        return {4096: "cosmos-1.0-7B", 5120: "cosmos-1.0-14B"}.get(width, "cosmos-1.0")
    return {2048: "cosmos-predict2-2B", 5120: "cosmos-predict2-14B"}.get(width, "cosmos-predict2")


PRESETS = (
    ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("crossattn_proj.*", "embedder"),
    ("img_context_proj.*", "embedder"), ("final_layer.*", "final projection"),
)


# Cosmos Predict2 inventories at real size (NVIDIA / ComfyUI names), for scripts/bench.py --arch.
#
# 14B: width 5120 (40 heads of 128), 36 blocks, MLP 20480; 2B: width 2048 (16 heads), 28 blocks,
# MLP 8192. Both: T5 text 1024 wide, AdaLN-LoRA of rank 256, patches 1x2x2 over 16 latent
# channels plus Video2World's condition mask and the padding mask, no biases. Block linears
# (attention, MLP, AdaLN-LoRA) FP8; embedders and the final layer BF16.


def predict2_14b(blocks: int | None = None) -> list[TensorSpec]:
    return predict2(5120, 20480, 36 if blocks is None else blocks)


def predict2_2b(blocks: int | None = None) -> list[TensorSpec]:
    return predict2(2048, 8192, 28 if blocks is None else blocks)


def predict2(d: int, mlp: int, n: int, text: int = 1024, lora: int = 256, head: int = 128) -> list[TensorSpec]:
    specs = _linear("x_embedder.proj.1", d, (16 + 2) * 4, False, bias=False)
    specs += _linear("t_embedder.1.linear_1", d, d, False, bias=False)
    specs += _linear("t_embedder.1.linear_2", 3 * d, d, False, bias=False)
    specs.append(TensorSpec("t_embedding_norm.weight", (d,), False))
    for i in range(n):
        p = f"blocks.{i}."
        for part in ("self_attn", "cross_attn", "mlp"):
            specs += _linear(f"{p}adaln_modulation_{part}.1", lora, d, True, bias=False)
            specs += _linear(f"{p}adaln_modulation_{part}.2", 3 * d, lora, True, bias=False)
        for attn, kv in (("self_attn", d), ("cross_attn", text)):
            specs += _linear(f"{p}{attn}.q_proj", d, d, True, bias=False)
            specs += _linear(f"{p}{attn}.k_proj", d, kv, True, bias=False)
            specs += _linear(f"{p}{attn}.v_proj", d, kv, True, bias=False)
            specs += _linear(f"{p}{attn}.output_proj", d, d, True, bias=False)
            specs += [TensorSpec(f"{p}{attn}.q_norm.weight", (head,), False),
                      TensorSpec(f"{p}{attn}.k_norm.weight", (head,), False)]
        specs += _linear(p + "mlp.layer1", mlp, d, True, bias=False)
        specs += _linear(p + "mlp.layer2", d, mlp, True, bias=False)
    specs += _linear("final_layer.adaln_modulation.1", lora, d, False, bias=False)
    specs += _linear("final_layer.adaln_modulation.2", 2 * d, lora, False, bias=False)
    specs += _linear("final_layer.linear", 16 * 4, d, False, bias=False)
    return specs


FAMILY = Family(
    "cosmos", "dit",
    DetectionRule(("blocks.block0.blocks.0.block.attn.to_q.0.weight", "blocks.0.self_attn.q_proj.weight"),
                  "diffusers: cosmos-1.0, cosmos-2.0", "x_embedder.proj.1.weight", ("blocks.",)),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(?:block)?(\d+)\.",
    inventories=(("cosmos-14b", predict2_14b), ("cosmos-2b", predict2_2b)))
