"""The quality harness's models and tools under their old names: the code lives in the package
``fp8stream.harness`` (split by model: see its docstring); this module keeps scripts and tests
that import ``quality_models`` working. New code imports ``fp8stream.harness.*`` directly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fp8stream.harness import flux, names  # noqa: E402
from fp8stream.harness.checkpoint import (  # noqa: E402,F401
    COMFY_QUANT_JSON,
    FP8Layer,
    comfy_quant_tensor,
    read_fp8_layers,
    write_fp8_checkpoint,
)
from fp8stream.harness.digits import (  # noqa: E402,F401
    NUM_CLASSES,
    TXT_TOKENS,
    ClassConditioning,
    digit_classifier,
    load_digits_tokens,
    pack,
    sample_accuracy,
    unpack,
)
from fp8stream.harness.dit import (  # noqa: E402,F401
    REPO_ROOT,
    TinyDiT,
    end_to_end as flux_end_to_end,  # noqa: E402,F401
    fp8_weights,
    load,
    model_dir,
    rf_loss,
    sample,
    write_fp8 as write_tiny_flux_fp8,  # noqa: E402,F401
)
from fp8stream.harness.flux import (  # noqa: E402,F401
    DEFAULT_CONFIG as DEFAULT_FLUX_CONFIG,  # noqa: E402,F401
    SAMPLE_GUIDANCE,
    forward as flux_forward,  # noqa: E402,F401
    image_ids,
    linear_maps as flux_linear_maps,  # noqa: E402,F401
    make_model as make_tiny_flux,  # noqa: E402,F401
    modulations as _modulated,  # noqa: E402,F401
    other_maps as flux_norm_maps,  # noqa: E402,F401
)
from fp8stream.harness.fp8 import (  # noqa: E402,F401
    FP8_MAX,
    Scale,
    _ck,
    dequantize_weight,
    fp8_linear,
    fp8_linear_quality,
    fp8_model,
    quantize_weight,
    resolve_scale as _resolve_scale,  # noqa: E402,F401
    sqnr_db,
)
from fp8stream.harness.minilm import (  # noqa: E402,F401
    CALIBRATION_SENTENCES,
    EVALUATION_SENTENCES,
    embed,
    load_minilm,
    minilm_dir,
    minilm_end_to_end,
    minilm_linear_names,
    write_minilm_fp8,
)
from fp8stream.harness.names import (
    LinearMap,  # noqa: E402,F401
    swap_halves as _swap_halves,  # noqa: E402,F401
)
from fp8stream.harness.record import LinearInputs, inputs_by_comfy_name, record_linear_inputs  # noqa: E402,F401
from fp8stream.harness.rescale import rescale_tiny_flux, rescaled_copy  # noqa: E402,F401

TinyFlux = TinyDiT
TINY_FLUX_DIR = model_dir("flux")
TINY_FLUX_WEIGHTS = TINY_FLUX_DIR / "tiny_flux.safetensors"
TINY_FLUX_COND = TINY_FLUX_DIR / "conditioning.safetensors"
TINY_FLUX_CONFIG = TINY_FLUX_DIR / "config.json"


def load_tiny_flux(directory: Path | str = TINY_FLUX_DIR, weights: Path | str | None = None) -> TinyDiT:
    return load(directory, weights)


def flux_inputs_by_comfy_name(rec: LinearInputs, cfg: Mapping) -> LinearInputs:
    return inputs_by_comfy_name(rec, flux.linear_maps(cfg))


def flux_fp8_weights(layers: Mapping[str, FP8Layer], cfg: Mapping) -> dict:
    return fp8_weights(TinyDiT(None, None, dict(cfg), "flux"), layers)


def flux_scales(scales: Mapping, cfg: Mapping) -> dict:
    return {p: scales.get(lm.comfy) for lm in flux.linear_maps(cfg) for p in lm.parts}


def diffusers_to_comfy(sd: Mapping, cfg: Mapping) -> dict:
    return names.to_comfy(flux, sd, cfg)


def comfy_to_diffusers(sd: Mapping, cfg: Mapping) -> dict:
    return names.from_comfy(flux, sd, cfg)


def _flux_rows(cfg: Mapping) -> dict[str, int]:
    return names.linear_rows(flux.make_model, cfg)
