"""What the diffusion transformers' model code shares: converters run with a checkpoint's own widths,
prefix renames for converters' gaps, joint attention's value sources, BFL models' sizes."""

from __future__ import annotations

import types
from typing import Iterable, Mapping

from fp8stream.families.family import count_blocks


def with_constants(fn: types.FunctionType, table: Mapping[float, float]) -> types.FunctionType:
    """A converter with the numbers it hard-codes (a model's widths) replaced as `table` says, in
    its nested functions too: it then splits this checkpoint's fused tensors at their own sizes."""
    return types.FunctionType(_replaced(fn.__code__, table), fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)


def _replaced(code: types.CodeType, table: Mapping[float, float]) -> types.CodeType:
    consts = tuple(_replaced(c, table) if isinstance(c, types.CodeType)
                   else table.get(c, c) if type(c) in (int, float) else c for c in code.co_consts)
    return code.replace(co_consts=consts)


def rename_prefixes(state: Mapping[str, object], table: Mapping[str, str]) -> dict:
    """The state with each name that starts with a key of `table` given that key's replacement
    (converters' gaps: names a diffusers converter leaves as they are)."""
    out = {}
    for name, value in state.items():
        old = next((p for p in table if name.startswith(p)), None)
        out[name if old is None else table[old] + name[len(old):]] = value
    return out


def joint_value_sources(layers: int, prefix: str = "transformer_blocks") -> dict[str, list[list[str]]]:
    """Joint (MMDiT) attention: both streams' output projections read the mix of both streams'
    values (diffusers' names: to_v, add_v_proj -> to_out.0, to_add_out)."""
    out = {}
    for i in range(layers):
        a = f"{prefix}.{i}.attn."
        for proj in ("to_out.0", "to_add_out"):
            out[a + proj] = [[a + "to_v", a + "add_v_proj"]]
    return out


def self_value_sources(attentions: Iterable[str]) -> dict[str, list[list[str]]]:
    """Attentions that mix only their own values: each output projection reads its to_v
    (`attentions`: the attention modules' names with their trailing dot, diffusers' names)."""
    return {a + "to_out.0": [[a + "to_v"]] for a in attentions}


def bfl_sizes(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """The sizes every BFL-named double/single-block DiT (Flux, Flux.2, Chroma) reads from its
    shapes: patch 1, widths, heads (from the q norm), block counts, text width."""
    inner, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": shapes["final_layer.linear.weight"][0],
        "num_layers": count_blocks(shapes, "double_blocks."),
        "num_single_layers": count_blocks(shapes, "single_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
    }
