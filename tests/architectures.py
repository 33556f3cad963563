"""Key inventories of real checkpoints (Flux, SD3, Wan, T5), scaled down in width only.

Names, nesting and shape ratios follow the ComfyUI-native state dicts; `build_model` writes any
of them in any FP8 flavour, with or without a prefix, through fp8stream.synthetic.
"""

from __future__ import annotations

import torch

from fp8stream.synthetic.checkpoint import (
    SyntheticTensor,
    bf16_tensor,
    comfy_fp8_linear,
    legacy_fp8_linear,
    legacy_marker,
    plain_fp8_linear,
)

H = 32  # hidden width (3072 in Flux, 1536 in SD3.5 medium, 5120 in Wan 14B)


def flux_linears(h: int = H, double: int = 2, single: int = 2) -> dict[str, tuple[int, int]]:
    layers = {"img_in": (h, 64), "txt_in": (h, 48), "time_in.in_layer": (h, 256), "time_in.out_layer": (h, h),
              "vector_in.in_layer": (h, 24), "vector_in.out_layer": (h, h),
              "guidance_in.in_layer": (h, 256), "guidance_in.out_layer": (h, h)}
    for n in range(double):
        for s in ("img", "txt"):
            layers.update({f"double_blocks.{n}.{s}_mod.lin": (6 * h, h), f"double_blocks.{n}.{s}_attn.qkv": (3 * h, h),
                           f"double_blocks.{n}.{s}_attn.proj": (h, h), f"double_blocks.{n}.{s}_mlp.0": (4 * h, h),
                           f"double_blocks.{n}.{s}_mlp.2": (h, 4 * h)})
    for n in range(single):
        layers.update({f"single_blocks.{n}.linear1": (7 * h, h), f"single_blocks.{n}.linear2": (h, 5 * h),
                       f"single_blocks.{n}.modulation.lin": (3 * h, h)})
    layers.update({"final_layer.linear": (64, h), "final_layer.adaLN_modulation.1": (2 * h, h)})
    return layers


def sd3_linears(h: int = H, blocks: int = 2) -> dict[str, tuple[int, int]]:
    layers = {"context_embedder": (h, 64), "t_embedder.mlp.0": (h, 256), "t_embedder.mlp.2": (h, h),
              "y_embedder.mlp.0": (h, 48), "y_embedder.mlp.2": (h, h)}
    for n in range(blocks):
        for s in ("x_block", "context_block"):
            p = f"joint_blocks.{n}.{s}"
            layers.update({f"{p}.attn.qkv": (3 * h, h), f"{p}.attn.proj": (h, h), f"{p}.mlp.fc1": (4 * h, h),
                           f"{p}.mlp.fc2": (h, 4 * h), f"{p}.adaLN_modulation.1": (6 * h, h)})
    layers.update({"final_layer.linear": (64, h), "final_layer.adaLN_modulation.1": (2 * h, h)})
    return layers


def wan_linears(h: int = H, blocks: int = 3) -> dict[str, tuple[int, int]]:
    layers = {"text_embedding.0": (h, 64), "text_embedding.2": (h, h), "time_embedding.0": (h, 256),
              "time_embedding.2": (h, h), "time_projection.1": (6 * h, h)}
    for n in range(blocks):
        for a in ("self_attn", "cross_attn"):
            layers.update({f"blocks.{n}.{a}.{x}": (h, h) for x in "qkvo"})
        layers.update({f"blocks.{n}.ffn.0": (4 * h, h), f"blocks.{n}.ffn.2": (h, 4 * h)})
    layers["head.head"] = (64, h)
    return layers


def t5_linears(h: int = H, blocks: int = 2) -> dict[str, tuple[int, int]]:
    layers = {}
    for n in range(blocks):
        p = f"encoder.block.{n}.layer"
        layers.update({f"{p}.0.SelfAttention.{x}": (h, h) for x in "qkvo"})
        layers.update({f"{p}.1.DenseReluDense.wi_0": (2 * h, h), f"{p}.1.DenseReluDense.wi_1": (2 * h, h),
                       f"{p}.1.DenseReluDense.wo": (h, 2 * h)})
    return layers


LINEARS = {"flux": flux_linears, "sd3": sd3_linears, "wan": wan_linears, "t5": t5_linears}


def _others(arch: str, g: torch.Generator) -> list[tuple[str, torch.Tensor | tuple]]:
    """Non-linear tensors of each inventory (norms, embeddings, FP8 convolutions)."""
    if arch == "flux":
        return [("double_blocks.0.img_attn.norm.query_norm.scale", torch.ones(H // 2)),
                ("double_blocks.0.img_attn.qkv.bias", torch.zeros(3 * H))]
    if arch == "sd3":
        return [("x_embedder.proj.weight", (H, 16, 2, 2)), ("pos_embed", torch.randn(1, 16, H, generator=g))]
    if arch == "wan":
        return [("patch_embedding.weight", (H, 16, 1, 2, 2)), ("blocks.0.norm3.weight", torch.ones(H))]
    return [("shared.weight", torch.randn(64, H, generator=g)), ("encoder.final_layer_norm.weight", torch.ones(H))]


def build_model(arch: str, flavour: str = "comfy", prefix: str = "", weight_only: bool = False,
                input_scale: float | None = None, seed: int = 0) -> list[SyntheticTensor]:
    """An `arch` checkpoint with every linear in FP8 `flavour` (comfy, legacy or plain); FP8
    convolutions (SD3, Wan patch embedders) are stored as FP8 too, as converters do."""
    g = torch.Generator().manual_seed(seed)
    tensors: list[SyntheticTensor] = []
    for name, (out_f, in_f) in LINEARS[arch]().items():
        w = torch.randn(out_f, in_f, generator=g) / in_f**0.5
        full = prefix + name
        if flavour == "comfy":
            tensors += comfy_fp8_linear(full, w, input_scale=input_scale, weight_only=weight_only)
        elif flavour == "legacy":
            tensors += legacy_fp8_linear(full, w, input_scale=input_scale)
        else:
            tensors += plain_fp8_linear(full, w)
    if flavour == "legacy":
        tensors.append(legacy_marker(prefix, weight_only))
    for name, value in _others(arch, g):
        if isinstance(value, tuple):  # an FP8 convolution weight
            numel = 1
            for d in value:
                numel *= d
            tensors.append(SyntheticTensor(prefix + name, "F8_E4M3", value, bytes(numel)))
        else:
            tensors.append(bf16_tensor(prefix + name, value))
    return tensors


def layer_names(arch: str, prefix: str = "") -> list[str]:
    return [prefix + n for n in LINEARS[arch]()]
