"""The model's tensors in a header, its family and each FP8 weight's scale tensor: what the
forward pass reads from names and shapes alone (torch-free)."""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from fp8stream.families import by_name
from fp8stream.families.detect import Detection, detect
from fp8stream.families.family import ModelCode
from fp8stream.formats.layers import take_inventory
from fp8stream.io.header import Header
from fp8stream.names.prefixes import common_model_prefix, split_prefix
from fp8stream.names.suffixes import WEIGHT, is_companion, layer_of, weight_scale_of


def forward_family(shapes: Mapping[str, Sequence[int]]) -> tuple[Detection | None, ModelCode | None]:
    """The detection of these (bare) names and shapes, and its family's model code when it has some."""
    found = detect(shapes)
    return found, by_name(found.family).model if found is not None else None


def model_tensors(shapes: dict[str, tuple[int, ...]]) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(model prefix, the model's tensors): every tensor when the names share one prefix (or
    none); in an all-in-one checkpoint (LTX-2's: `model.diffusion_model.` beside `vae.`,
    `audio_vae.`, `vocoder.`; SD3's beside `text_encoders.`) the tensors under the first prefix,
    most tensors first, whose names the forward pass has a family for. The rest are not the model."""
    names = [n for n in shapes if not is_companion(n)]
    prefix = common_model_prefix(names)
    counts = Counter(split_prefix(n)[0] for n in names)
    if prefix or len(counts) < 2:
        return prefix, shapes
    for candidate, _ in counts.most_common():
        subset = {n: s for n, s in shapes.items() if candidate and n.startswith(candidate)}
        if subset and forward_family({n[len(candidate):]: s for n, s in subset.items()})[1] is not None:
            return candidate, subset
    return "", shapes


def weight_scales(header: Header) -> dict[str, str | None]:
    """Each FP8 weight's scale tensor: the inventory's for the linears (all three flavours); an
    FP8 convolution (skipped there: it takes no input scale) still runs with its own scale."""
    out: dict[str, str | None] = {layer.weight.name: layer.weight_scale for layer in take_inventory(header).layers}
    for info in header.tensors:
        if info.dtype.startswith("F8_") and info.name not in out and info.name.endswith(WEIGHT):
            out[info.name] = weight_scale_of(layer_of(info.name), header)
    return out
