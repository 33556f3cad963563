"""Layers fed by the same tensor share one activation scale: the max of their own (docs/scales.md).

Loaders that fuse q/k/v (or gate/up) into one matmul use one scale for all of them, and a
smaller one clips. Groups are proven from names alone: siblings under the same parent module.
A cross-attention's q reads another tensor than its k and v, so it stays alone.
"""

from __future__ import annotations

import re

from fp8stream import families
from fp8stream.families.family import SharedInput
from fp8stream.names.prefixes import bare_name

# siblings every family's modules share (a family's own: its shared_inputs); all rules apply to every file
_GENERIC = (
    SharedInput(r"(^|.*\.)cross_attn$", ("k", "v")),
    SharedInput(".*", ("q", "k", "v")),  # self_attn, attn, SelfAttention
    SharedInput(".*", ("to_q", "to_k", "to_v")),  # diffusers attention (attn2: k/v only, below)
    SharedInput(".*", ("add_q_proj", "add_k_proj", "add_v_proj")),  # diffusers joint attention, text stream
    SharedInput(".*", ("q_proj", "k_proj", "v_proj")),  # LLM / CLIP encoders
    SharedInput(".*", ("gate_proj", "up_proj")),  # LLM MLP
)
_SIBLINGS = [(re.compile(rule.parent), rule.leaves) for rule in (*_GENERIC, *families.sibling_rules())]
# cross-attentions: q reads one stream, k and v another (families add theirs: text and another modality)
_CROSS = re.compile(r"(^|.*\.)(" + "|".join(("cross_attn", "attn2", *families.cross_attention_modules())) + ")$")


def shared_scale_groups(layer_names: list[str]) -> list[list[str]]:
    """Groups (2+ layers, in the given order) whose members read the same input tensor."""
    by_parent: dict[str, dict[str, str]] = {}
    for name in layer_names:
        parent, _, leaf = name.rpartition(".")
        by_parent.setdefault(parent, {})[leaf] = name
    groups: list[list[str]] = []
    for parent, leaves in by_parent.items():
        bare_parent = bare_name(parent + ".")[:-1] if parent else ""
        taken: set[str] = set()
        for pattern, siblings in _SIBLINGS:
            if not pattern.match(bare_parent):
                continue
            members = [leaf for leaf in siblings if leaf in leaves and leaf not in taken]
            if _CROSS.match(bare_parent):
                members = [m for m in members if m not in ("q", "to_q", "q_proj")]  # q reads the other stream
            if len(members) >= 2:
                groups.append([leaves[m] for m in members])
                taken.update(members)
    order = {name: i for i, name in enumerate(layer_names)}
    groups.sort(key=lambda g: order[g[0]])
    return groups


def share_scales(scales: dict[str, float], groups: list[list[str]]) -> dict[str, list[str]]:
    """Raise every group member's scale to the group's max, in place; {layer: its group}."""
    member_of: dict[str, list[str]] = {}
    for group in groups:
        members = [name for name in group if name in scales]
        if len(members) < 2:
            continue
        top = max(scales[name] for name in members)
        for name in members:
            scales[name] = top
            member_of[name] = members
    return member_of
