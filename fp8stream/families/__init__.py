"""The model families: one module each, listed here. Every other part of the tool asks this registry.

FAMILIES is in detection order: the first family whose key a file holds wins (families/detect.py).
Order matters where families share names: Flux.2 and Chroma carry Flux's `double_blocks`,
HunyuanVideo carries them too (so it comes before Flux, whose layer-name keys it would match),
Z-Image carries Lumina 2's `cap_embedder`, LTX-2 carries LTX-Video's `patchify_proj`.
The key names of ComfyUI's files come from diffusers' converters and ComfyUI's own loader
(`comfy/model_detection.py`). Adding a family: its module and one line here.
"""

from __future__ import annotations

import re

from fp8stream.families import (
    auraflow,
    bert,
    chroma,
    clip,
    cosmos,
    flux,
    flux2,
    flux3,
    hidream,
    hunyuan_video,
    hunyuan_video15,
    krea2,
    llm,
    ltx2,
    ltx_video,
    lumina2,
    mochi,
    qwen_image,
    qwen_image21,
    sana,
    sd3,
    t5,
    wan,
    z_image,
)
from fp8stream.families.family import Family, Inventory, SharedInput
from fp8stream.names.prefixes import split_prefix

FAMILIES: tuple[Family, ...] = (
    sd3.FAMILY,
    flux2.FAMILY,
    flux3.FAMILY,
    chroma.FAMILY,
    hunyuan_video15.FAMILY,
    hunyuan_video.FAMILY,
    flux.FAMILY,
    ltx2.FAMILY,
    ltx_video.FAMILY,
    mochi.FAMILY,
    auraflow.FAMILY,
    z_image.FAMILY,
    lumina2.FAMILY,
    sana.FAMILY,
    wan.FAMILY,
    qwen_image21.FAMILY,
    krea2.FAMILY,
    hidream.FAMILY,
    cosmos.FAMILY,
    qwen_image.FAMILY,
    bert.FAMILY,
    t5.FAMILY,
    clip.FAMILY,
    llm.FAMILY,
)


_BY_NAME = {family.name: family for family in FAMILIES}
# `--preset`'s choices in the order they were listed before the families moved here (its help and
# error text unchanged); a family added later with presets comes after them, in registry order
_PRESETS_FIRST = (flux, sd3, wan, flux2, chroma, qwen_image, z_image, lumina2, hidream, hunyuan_video15, ltx2, cosmos)
# the families with model code, in the order the forward pass's "knows ..." note listed them before
# they moved here; a family given model code later comes after them, in registry order
_MODELS_FIRST = (flux, sd3, wan, flux2, chroma, qwen_image, z_image, lumina2, hidream, bert, t5, clip, llm,
                 hunyuan_video15, ltx2, cosmos)
_TEXT_LAYER = re.compile("|".join(f.layer_pattern for f in FAMILIES if f.layer_pattern))
_TEXT_LAYER_NAMES = frozenset(name for f in FAMILIES for name in f.layer_names)
_INVENTORIES = {key: build for f in FAMILIES for key, build in f.inventories}


def by_name(name: str) -> Family:
    """The family of this name (a Detection's `family`); KeyError when none."""
    return _BY_NAME[name]


def preset_names() -> tuple[str, ...]:
    """The families that have a `--preset`."""
    first = [module.FAMILY for module in _PRESETS_FIRST]
    return tuple(f.name for f in first + [f for f in FAMILIES if f.presets and f not in first])


def model_names() -> tuple[str, ...]:
    """The families the forward pass has model code for."""
    first = [module.FAMILY for module in _MODELS_FIRST]
    return tuple(f.name for f in first + [f for f in FAMILIES if f.model is not None and f not in first])


def inventory(key: str) -> Inventory:
    """The real-size inventory of this bench key (`scripts/bench.py --arch`); KeyError when none."""
    return _INVENTORIES[key]


def inventory_keys() -> tuple[str, ...]:
    """Every family's bench keys, in registry order."""
    return tuple(_INVENTORIES)


def sibling_rules() -> tuple[SharedInput, ...]:
    """Every family's shared-input rules, once each: all apply to every file (names alone prove them)."""
    return tuple(dict.fromkeys(rule for f in FAMILIES for rule in f.shared_inputs))


def cross_attention_modules() -> tuple[str, ...]:
    """Module names, of every family, whose q reads another stream than their k and v."""
    return tuple(dict.fromkeys(name for f in FAMILIES for name in f.cross_attention))


def is_text_encoder_layer(name: str) -> bool:
    """A layer of a text encoder: under a text-encoder prefix (ComfyUI's checkpoints), or named as one."""
    prefix, bare = split_prefix(name)
    return (prefix.startswith(("text_encoders.", "cond_stage_model.")) or bool(_TEXT_LAYER.search(name))
            or bare in _TEXT_LAYER_NAMES)
