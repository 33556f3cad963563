"""Read a checkpoint the way ComfyUI's current loader does, and say per layer what runs.

Mirrors `comfy/utils.py: convert_old_quants` and `comfy/ops.py: MixedPrecisionOps` (checked
against ComfyUI's source): `__metadata__["_quantization_metadata"]` first (it rebuilds every
listed layer's `comfy_quant`, overriding the tensors); else a `{prefix}scaled_fp8` marker turns
legacy keys into current ones (`scale_weight` -> `weight_scale`, `scale_input` -> `input_scale`
except a `scale_input` of exactly 1.0, which is dropped; a 2-element marker sets
`full_precision_matrix_mult`). Then every `L.comfy_quant` selects the layer's format; a
float8_e4m3fn layer runs FP8 matmul unless flagged (or a text encoder, which ComfyUI always
runs weight-only), with `input_scale` when stored and 1.0 when not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors import safe_open

COMFY_DEFAULT_INPUT_SCALE = 1.0  # what ComfyUI uses when a layer has no input_scale (PR #11000)


@dataclass
class RuntimeLayer:
    name: str
    format: str | None  # comfy_quant format, None: no marker (weight upcast)
    fp8_matmul: bool  # whether activations are quantized to FP8
    stored_input_scale: float | None  # the input_scale the loader kept, None when absent
    weight: torch.Tensor | None = None  # FP8 weight, as the layer gets it
    weight_scale: torch.Tensor | None = None

    @property
    def input_scale(self) -> float:
        """The scale the runtime quantizes activations with."""
        return COMFY_DEFAULT_INPUT_SCALE if self.stored_input_scale is None else self.stored_input_scale


def _convert_old_quants(sd: dict[str, torch.Tensor], metadata: dict[str, str], model_prefix: str) -> dict:
    quant_metadata = None
    if "_quantization_metadata" not in metadata:
        key = f"{model_prefix}scaled_fp8"
        if key in sd:
            full_precision = sd[key].nelement() == 2
            out, layers = {}, {}
            for k in list(sd):
                if k == key:
                    continue
                if not k.startswith(model_prefix):
                    out[k] = sd[k]
                    continue
                w, k_out, layer = sd[k], k, None
                if k_out.endswith(".scale_weight"):
                    layer = k_out[: -len(".scale_weight")]
                    k_out = f"{layer}.weight_scale"
                if layer is not None:
                    conf = {"format": "float8_e4m3fn"}
                    if full_precision:
                        conf["full_precision_matrix_mult"] = True
                    layers[layer] = conf
                if k_out.endswith(".scale_input"):
                    k_out = k_out[: -len(".scale_input")] + ".input_scale"
                    if w.item() == 1.0:
                        continue
                out[k_out] = w
            sd = out
            quant_metadata = {"layers": layers}
    else:
        quant_metadata = json.loads(metadata["_quantization_metadata"])
    if quant_metadata is not None:
        for k, v in quant_metadata["layers"].items():
            sd[f"{k}.comfy_quant"] = torch.tensor(list(json.dumps(v).encode("utf-8")), dtype=torch.uint8)
    return sd


def load_like_comfyui(path, model_prefix: str | None = None, text_encoder: bool = False) -> dict[str, RuntimeLayer]:
    """{layer: what ComfyUI's runtime does with it} for every FP8 weight and every marked layer."""
    with safe_open(str(path), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata() or {}
    if model_prefix is None:
        model_prefix = "model.diffusion_model." if any(k.startswith("model.diffusion_model.") for k in sd) else ""
    sd = _convert_old_quants(sd, metadata, model_prefix)
    layers: dict[str, RuntimeLayer] = {}
    for key in [k for k in sd if k.endswith(".comfy_quant")]:
        name = key[: -len(".comfy_quant")]
        conf = json.loads(sd[key].numpy().tobytes())  # as ops.py reads it: trailing spaces allowed
        fmt = conf.get("format")
        full_precision = bool(conf.get("full_precision_matrix_mult", False)) or text_encoder
        scale = sd.get(f"{name}.input_scale")
        weight = sd.get(f"{name}.weight")
        if fmt == "float8_e4m3fn":
            assert weight is not None and weight.dtype == torch.float8_e4m3fn, f"{name}: weight not stored as F8_E4M3"
            ws = sd.get(f"{name}.weight_scale")
            assert ws is not None and ws.dtype == torch.float32, f"{name}: weight_scale missing or not F32"
            if scale is not None:
                assert scale.dtype == torch.float32 and scale.numel() == 1, f"{name}: input_scale not one F32"
            layers[name] = RuntimeLayer(name, fmt, not full_precision, None if scale is None else float(scale),
                                        weight, ws)
        else:
            layers[name] = RuntimeLayer(name, fmt, False, None if scale is None else float(scale))
    for key, t in sd.items():
        if key.endswith(".weight") and t.dtype == torch.float8_e4m3fn and key[:-7] not in layers:
            layers[key[:-7]] = RuntimeLayer(key[:-7], None, False, None, t, None)
    return layers
