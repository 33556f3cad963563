"""scripts/comfy_truth.py's cases: small synthetic checkpoints built with fp8stream's own builders
(fp8stream/synthetic/), each naming the FP8 layer to run and the loader ComfyUI uses for it, and
our own calibrated outputs of the built-in example (comfy markers, legacy scaled_fp8, layers kept
weight-only).

(a) a stored input_scale that is not one positive finite value; (b) the other rules of
comfy_runtime.layer_run; (c) fp8stream calibrate's outputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from fp8stream.scales.fp8_maths import E4M3_MAX
from fp8stream.synthetic.checkpoint import (
    SyntheticTensor,
    bf16_tensor,
    comfy_fp8_linear,
    legacy_fp8_linear,
    legacy_marker,
    marker,
    scale_values,
    write_checkpoint,
)
from fp8stream.synthetic.example import example_tensors

LAYER = "blk.lin"
OUT, IN = 24, 32
SCALE = 0.37  # a real input scale: inputs reach 1.3 x 448 x it, so a few clip
CLIPS_AT_ONE = 2000.0  # an input amax that clips at 1.0 (448)


@dataclass
class Case:
    name: str
    layer: str = LAYER
    loader: str = "diffusion"  # comfy_truth.comfy_linear's loaders: diffusion, checkpoint, text_encoder
    tensors: list[SyntheticTensor] | None = None
    metadata: dict[str, str] | None = None
    amax: float = 1.3 * E4M3_MAX * SCALE
    path: Path | None = None  # an existing file (our calibrated outputs) instead of tensors
    noted: str = ""  # a difference known and not modelled by check (docs/comfyui.md says which): NOTE, not FAIL

    @property
    def in_features(self) -> int:
        if self.path is None:
            return next(t for t in self.tensors if t.name == self.layer + ".weight").shape[1]
        with safe_open(str(self.path), "pt") as f:
            return f.get_slice(self.layer + ".weight").get_shape()[1]


def _weight(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(OUT, IN, generator=g) / IN**0.5


def _bias(name: str = LAYER) -> SyntheticTensor:
    g = torch.Generator().manual_seed(1)
    return bf16_tensor(name + ".bias", torch.randn(OUT, generator=g))


def comfy_layer(input_scale: float | None = SCALE, doc: dict | None = None, name: str = LAYER) -> list[SyntheticTensor]:
    """One comfy-format linear with a bias; `doc` replaces the marker's JSON."""
    tensors = comfy_fp8_linear(name, _weight(), input_scale=input_scale) + [_bias(name)]
    if doc is not None:
        tensors = [t for t in tensors if not t.name.endswith(".comfy_quant")] + [marker(name + ".comfy_quant", doc)]
    return tensors


def with_scale(tensors: list[SyntheticTensor], scale: SyntheticTensor) -> list[SyntheticTensor]:
    """The tensors with the layer's input scale replaced by `scale` (same name)."""
    return [t for t in tensors if t.name != scale.name] + [scale]


def legacy_layer(scale_input: float | None = SCALE, marker_elements: int = 0) -> list[SyntheticTensor]:
    tensors = legacy_fp8_linear(LAYER, _weight(), input_scale=scale_input) + [_bias()]
    n = marker_elements
    return tensors + [legacy_marker(weight_only=n == 2) if n in (0, 2) else
                      SyntheticTensor("scaled_fp8", "F8_E4M3", (n,), bytes(n))]


def _unusable_scales() -> list[Case]:
    """(a): 0, negative, NaN, +-inf, several values, none at all (an empty tensor)."""
    cases = []
    for label, value in (("0", 0.0), ("negative -0.37", -SCALE), ("NaN", math.nan), ("+inf", math.inf),
                         ("-inf", -math.inf)):
        amax = CLIPS_AT_ONE if value == 0.0 or not math.isfinite(value) else 1.3 * E4M3_MAX * SCALE
        cases.append(Case(f"a comfy input_scale {label}", tensors=comfy_layer(value), amax=amax))
    name = LAYER + ".input_scale"
    for label, values, shape in (("2 values [s, s]", [SCALE, SCALE], (2,)), ("0 values (empty)", [], (0,)),
                                 (f"{IN} values (one per input channel)", [SCALE] * IN, (IN,))):
        cases.append(Case(f"a comfy input_scale of {label}",
                          tensors=with_scale(comfy_layer(), scale_values(name, values, shape=shape))))
    cases += [
        Case("a comfy input_scale shape [1] (one value)", tensors=with_scale(comfy_layer(),
                                                                             scale_values(name, [SCALE], shape=(1,)))),
        Case("a comfy input_scale stored BF16", tensors=with_scale(comfy_layer(),
                                                                   scale_values(name, [SCALE], "BF16"))),
        Case("a comfy weight-only flag, input_scale NaN",
             tensors=comfy_layer(math.nan, {"format": "float8_e4m3fn", "full_precision_matrix_mult": True})),
        Case("a legacy scale_input 0", tensors=legacy_layer(0.0), amax=CLIPS_AT_ONE),
        Case("a legacy scale_input NaN", tensors=legacy_layer(math.nan)),
        Case("a legacy scale_input of 2 values",
             tensors=with_scale(legacy_layer(), scale_values(LAYER + ".scale_input", [SCALE, SCALE]))),
        Case("a legacy weight-only marker, scale_input of 2 values",
             tensors=with_scale(legacy_layer(marker_elements=2),
                                scale_values(LAYER + ".scale_input", [SCALE, SCALE]))),
    ]
    return cases


def _flag(value) -> dict:
    return {"format": "float8_e4m3fn", "full_precision_matrix_mult": value}


def _metadata(layers: dict) -> dict[str, str]:
    return {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


_PREFIX = "model.diffusion_model."
# unet_prefix_from_state_dict takes a prefix only from more than 5 keys that carry it
_PADDING = [bf16_tensor(f"{_PREFIX}pad{i}.weight", torch.ones(2)) for i in range(6)]


_SPELLING = "check applies a _quantization_metadata entry under either spelling of the layer's name; ComfyUI " \
    "under the one its loader sees"


def _rules() -> list[Case]:
    """(b): no scale, a legacy 1.0, the weight-only flag and its values, the legacy marker's sizes,
    _quantization_metadata, a text encoder."""
    fp8, weight_only = {"format": "float8_e4m3fn"}, _flag(True)
    prefixed = comfy_layer(name=_PREFIX + LAYER, doc=fp8) + _PADDING
    return [
        Case("b comfy real input_scale", tensors=comfy_layer()),
        Case("b comfy no input_scale (inputs to 2000)", tensors=comfy_layer(None), amax=CLIPS_AT_ONE),
        Case("b comfy flag true", tensors=comfy_layer(doc=weight_only)),
        Case("b comfy flag false", tensors=comfy_layer(doc=_flag(False))),
        Case("b comfy flag 1", tensors=comfy_layer(doc=_flag(1))),
        Case("b comfy flag \"false\" (a string)", tensors=comfy_layer(doc=_flag("false"))),
        Case("b comfy flag null", tensors=comfy_layer(doc=_flag(None))),
        Case("b legacy real scale_input", tensors=legacy_layer()),
        Case("b legacy scale_input 1.0 (dropped: 1.0; inputs to 2000)", tensors=legacy_layer(1.0), amax=CLIPS_AT_ONE),
        Case("b legacy no scale_input (inputs to 2000)", tensors=legacy_layer(None), amax=CLIPS_AT_ONE),
        Case("b legacy 2-element scaled_fp8 (weight-only)", tensors=legacy_layer(marker_elements=2)),
        Case("b legacy 1-element scaled_fp8", tensors=legacy_layer(marker_elements=1)),
        Case("b legacy 3-element scaled_fp8", tensors=legacy_layer(marker_elements=3)),
        Case("b metadata weight-only over an fp8 marker", tensors=comfy_layer(doc=fp8),
             metadata=_metadata({LAYER: weight_only})),
        Case("b metadata fp8 over a weight-only marker", tensors=comfy_layer(doc=weight_only),
             metadata=_metadata({LAYER: fp8})),
        Case("b metadata only (no marker tensor)",
             tensors=[t for t in comfy_layer() if not t.name.endswith(".comfy_quant")],
             metadata=_metadata({LAYER: weight_only})),
        Case("b metadata as a bare format string", tensors=comfy_layer(doc=weight_only),
             metadata=_metadata({LAYER: "float8_e4m3fn"})),
        Case("b metadata keyed bare, prefixed file, Load Diffusion Model", layer=_PREFIX + LAYER,
             tensors=prefixed, metadata=_metadata({LAYER: weight_only})),
        Case("b metadata keyed prefixed, prefixed file, Load Diffusion Model", layer=_PREFIX + LAYER,
             tensors=prefixed, metadata=_metadata({_PREFIX + LAYER: weight_only}), noted=_SPELLING),
        Case("b metadata keyed bare, prefixed file, Load Checkpoint", layer=_PREFIX + LAYER, loader="checkpoint",
             tensors=prefixed, metadata=_metadata({LAYER: weight_only}), noted=_SPELLING),
        Case("b metadata and a legacy layer (scaled_fp8 ignored)",
             tensors=legacy_layer() + comfy_layer(name="blk.other"), metadata=_metadata({"blk.other": fp8}),
             noted="with _quantization_metadata ComfyUI converts no legacy key: the weight loads without its scale"),
        Case("b text encoder (Load CLIP), real input_scale", layer="encoder.block.0.layer.0.SelfAttention.q",
             loader="text_encoder", tensors=comfy_layer(name="encoder.block.0.layer.0.SelfAttention.q")),
    ]


def synthetic_cases() -> list[Case]:
    return _unusable_scales() + _rules()


def _as_legacy(tensors: list[SyntheticTensor], weight_only: bool) -> list[SyntheticTensor]:
    """The example in the legacy flavour: scale_weight, scale_input, a scaled_fp8 marker."""
    out = []
    for t in tensors:
        if t.name.endswith(".comfy_quant"):
            continue
        name = t.name.replace(".weight_scale", ".scale_weight").replace(".input_scale", ".scale_input")
        out.append(SyntheticTensor(name, t.dtype, t.shape, t.data))
    return out + [legacy_marker(weight_only=weight_only)]


def _stored_scale(path: Path, layer: str) -> float | None:
    with safe_open(str(path), "pt") as f:
        for key in (layer + ".input_scale", layer + ".scale_input"):
            if key in f.keys():
                return float(f.get_tensor(key).float().reshape(-1)[0])
    return None


# one layer of each kind the example has: attention in, attention out (its inputs the largest), MLP in, MLP out
_PICKED = ("double_blocks.0.img_attn.qkv", "double_blocks.1.txt_attn.proj", "double_blocks.0.txt_mlp.0",
           "double_blocks.1.img_mlp.2")


def calibrated_cases(folder: Path, calibrate: Callable[..., None]) -> list[Case]:
    """(c): fp8stream calibrate's outputs of the example (comfy and legacy), default and with
    layers kept weight-only, four layers each."""
    comfy_in, legacy_in = folder / "example.safetensors", folder / "example-legacy.safetensors"
    tensors = example_tensors()
    write_checkpoint(str(comfy_in), tensors)
    write_checkpoint(str(legacy_in), _as_legacy(tensors, weight_only=False))
    runs = {"comfy output": (comfy_in, ()),
            "comfy output --exclude '*_mlp.2'": (comfy_in, ("--exclude", "*_mlp.2")),
            "comfy output --keep-weight-only": (comfy_in, ("--keep-weight-only",)),
            "legacy output": (legacy_in, ())}
    cases = []
    for label, (src, flags) in runs.items():
        out = folder / f"out-{len(cases)}.safetensors"
        calibrate(src, out, *flags)
        for layer in _PICKED:
            stored = _stored_scale(out, layer)
            amax = CLIPS_AT_ONE if stored is None or not stored > 0 else 1.3 * E4M3_MAX * stored
            cases.append(Case(f"c {label}: {layer}", layer=layer, path=out, amax=amax))
    return cases
