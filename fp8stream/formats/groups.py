"""Layers fed by the same tensor share one activation scale: the max of their own (docs/scales.md).

Loaders that fuse q/k/v (or gate/up) into one matmul use one scale for all of them, and a
smaller one clips. Groups are proven from names alone: siblings under the same parent module.
A cross-attention's q reads another tensor than its k and v, so it stays alone.
"""

from __future__ import annotations

import re

from fp8stream.names.prefixes import bare_name

# (parent pattern on the bare parent path, sibling leaf names sharing one input)
_SIBLINGS: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(r"(^|.*\.)cross_attn$"), ("k", "v")),
    (re.compile(r"(^|.*\.)cross_attn$"), ("k_img", "v_img")),
    (re.compile(r"(^|.*\.)EncDecAttention$"), ("k", "v")),
    (re.compile(r".*"), ("q", "k", "v")),  # self_attn, attn, SelfAttention
    (re.compile(r".*"), ("img_attn_q", "img_attn_k", "img_attn_v")),  # HunyuanVideo 1.5, q/k/v stored apart
    (re.compile(r".*"), ("txt_attn_q", "txt_attn_k", "txt_attn_v")),
    (re.compile(r".*"), ("to_q", "to_k", "to_v")),  # diffusers attention (attn2: k/v only, below)
    (re.compile(r".*"), ("add_q_proj", "add_k_proj", "add_v_proj")),  # diffusers joint attention, text stream
    (re.compile(r".*"), ("q_proj", "k_proj", "v_proj")),  # LLM / CLIP encoders
    (re.compile(r".*"), ("gate_proj", "up_proj")),  # LLM MLP
    (re.compile(r".*"), ("wi_0", "wi_1")),  # T5 gated FFN
    (re.compile(r"(^|.*\.)feed_forward$"), ("w1", "w3")),  # Lumina 2 / Z-Image gated FFN (gate, up)
]
# cross-attentions: q reads one stream, k and v another (LTX-2: text and the other modality)
_CROSS = re.compile(r"(^|.*\.)(cross_attn|attn2|EncDecAttention|audio_attn2|audio_to_video_attn|video_to_audio_attn)$")


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
