"""The legacy "scaled fp8" flavour: a top-level `scaled_fp8` marker tensor, `L.scale_weight`,
`L.scale_input`.

ComfyUI's `convert_old_quants` reads it only when the header has no `_quantization_metadata`:
a 2-element marker means every layer is weight-only, an empty one means FP8 matmul with
`scale_input`; a `scale_input` equal to 1.0 is dropped (docs/comfyui.md). There is no per-layer flag.
"""

from __future__ import annotations

import struct

from fp8stream.io.header import Header, TensorInfo
from fp8stream.names.suffixes import is_legacy_marker

WEIGHT_ONLY_ELEMENTS = 2  # a marker of 2 elements: full_precision_matrix_mult for every layer


def find_marker(header: Header) -> TensorInfo | None:
    """The `scaled_fp8` marker, bare or under a prefix (`model.diffusion_model.scaled_fp8`)."""
    for info in header.tensors:
        if is_legacy_marker(info.name):
            return info
    return None


def marker_is_weight_only(marker: TensorInfo) -> bool:
    return marker.numel == WEIGHT_ONLY_ELEMENTS


def marker_shape(weight_only: bool) -> tuple[int, ...]:
    return (WEIGHT_ONLY_ELEMENTS,) if weight_only else (0,)


def never_one(scale: float) -> float:
    """A float32 scale that is not exactly 1.0: ComfyUI's legacy loader drops a `scale_input` of
    1.0 (then runs at its default), so a computed 1.0 is nudged up by one float32 ulp."""
    if scale == 1.0:
        return struct.unpack("<f", struct.pack("<I", 0x3F800001))[0]
    return scale
