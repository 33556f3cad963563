"""ComfyUI mixed-precision FP8 checkpoints for the harness: write a model's linears as FP8
(``L.weight`` F8_E4M3, ``L.weight_scale`` F32 [], ``L.comfy_quant`` marker), read them back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fp8stream.harness.fp8 import quantize_weight
from fp8stream.names.suffixes import COMFY_MARKER, INPUT_SCALE, WEIGHT, WEIGHT_SCALE

COMFY_QUANT_JSON = {"format": "float8_e4m3fn"}


def comfy_quant_tensor(conf: Mapping = COMFY_QUANT_JSON) -> torch.Tensor:
    """The ``L.comfy_quant`` marker: U8 1-D tensor of the layer's JSON bytes."""
    return torch.tensor(list(json.dumps(dict(conf)).encode()), dtype=torch.uint8)


def write_fp8_checkpoint(state: Mapping[str, torch.Tensor], layers: list[str], path: Path | str,
                         input_scales: Mapping[str, float] | None = None) -> Path:
    """Write ``state`` with each layer in ``layers`` as ComfyUI FP8 (``L.weight`` F8_E4M3 [out,in],
    ``L.weight_scale`` F32 [], ``L.comfy_quant``); everything else passes through in its dtype.
    ``input_scales`` optionally adds ``L.input_scale`` (F32 []). The file gets mode 0644
    (safetensors writes 0600)."""
    out = {k: v.contiguous() for k, v in state.items()}
    for layer in layers:
        w = out[layer + WEIGHT]
        if w.ndim != 2:
            raise ValueError(f"{layer}.weight is not 2-D: {tuple(w.shape)}")
        out[layer + WEIGHT], out[layer + WEIGHT_SCALE] = quantize_weight(w)
        out[layer + COMFY_MARKER] = comfy_quant_tensor()
        if input_scales and layer in input_scales:
            out[layer + INPUT_SCALE] = torch.tensor(float(input_scales[layer]), dtype=torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    os.chmod(path, 0o644)
    return path


@dataclass
class FP8Layer:
    weight: torch.Tensor  # float8_e4m3fn [out, in]
    weight_scale: torch.Tensor  # F32 []
    input_scale: float | None  # from the file; None: none there, or the layer is flagged weight-only


def read_fp8_layers(path: Path | str) -> dict[str, FP8Layer]:
    """Every ``comfy_quant``-marked float8_e4m3fn layer of a checkpoint (input_scale if stored and
    the layer runs FP8 activations in ComfyUI: not flagged weight-only)."""
    layers = {}
    with safe_open(str(path), "pt") as f:
        ordered = list(f.keys())
        keys = set(ordered)
        for k in ordered:
            if not k.endswith(COMFY_MARKER):
                continue
            name = k[: -len(COMFY_MARKER)]
            conf = json.loads(bytes(f.get_tensor(k).tolist()).decode())
            if conf.get("format") != "float8_e4m3fn":
                continue
            # ComfyUI's flag wins over a scale beside it (fp8stream writes the measured one there)
            weight_only = conf.get("full_precision_matrix_mult") is True
            stored = name + INPUT_SCALE in keys and not weight_only
            s_in = float(f.get_tensor(name + INPUT_SCALE)) if stored else None
            layers[name] = FP8Layer(f.get_tensor(name + WEIGHT), f.get_tensor(name + WEIGHT_SCALE).float(), s_in)
    return layers
