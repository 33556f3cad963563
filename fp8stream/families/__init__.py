"""The model families: one module each, listed here. Every other part of the tool asks this registry.

FAMILIES is in detection order: the first family whose key a file holds wins (families/detect.py).
Order matters where families share names: Flux.2 and Chroma carry Flux's `double_blocks`,
HunyuanVideo carries them too (so it comes before Flux, whose layer-name keys it would match),
Z-Image carries Lumina 2's `cap_embedder`, LTX-2 carries LTX-Video's `patchify_proj`.
The key names of ComfyUI's files come from diffusers' converters and ComfyUI's own loader
(`comfy/model_detection.py`). Adding a family: its module and one line here.
"""

from __future__ import annotations

from fp8stream.families import (
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
from fp8stream.families.family import Family

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


def by_name(name: str) -> Family:
    """The family of this name (a Detection's `family`); KeyError when none."""
    return _BY_NAME[name]
