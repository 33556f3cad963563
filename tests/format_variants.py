"""One tiny model of every family the suite builds, in each FP8 flavour a user may hold:
ComfyUI's mixed precision (as built), legacy `scaled_fp8` (`scale_weight`, a top-level marker)
and plain FP8 (the weights alone). The FP8 bytes are the same in all three, so the forward pass
measures the same inputs whatever the flavour."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import architectures
import families_tiny
import forward_tiny
from fp8stream.synthetic.checkpoint import bf16_tensor, comfy_fp8_linear, write_checkpoint

# the families of forward_tiny.py and families_tiny.py (diffusers' classes), the key inventories of
# architectures.py (random weights under ComfyUI's names; t5 a text encoder), and no known family
FORWARD = ("flux", "sd3", "wan", "hunyuan-video-1.5", "ltx2", "cosmos", "auraflow")
IMAGE = ("flux2", "chroma", "qwen-image", "z-image", "lumina2", "hidream")
ENCODERS = ("bert", "umt5", "clip_l", "qwen25_vl")  # test_forward_encoders.py's text encoders
INVENTORY = ("keys-flux", "keys-sd3", "keys-wan", "keys-t5")
UNKNOWN = "unknown"
FAMILIES = FORWARD + IMAGE + ENCODERS + INVENTORY + (UNKNOWN,)
# no scale without a guess: no family known, or a partial file (keys-t5 lacks the relative
# attention bias the model is sized from) whose family has no producer graph either
NO_GUESS = (UNKNOWN, "keys-t5")
# small synthetic inputs: the decisions do not depend on them, the test's time does
FORWARD_ARGS = ("--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8",
                "--forward-threads", "1", "--json", "--no-progress")


def comfy_model(family: str, path: Path) -> Path:
    """The family's tiny model in ComfyUI's format."""
    if family in FORWARD:
        _, state, _ = forward_tiny.tiny(family)
        forward_tiny.write(state, path, prefix="model.diffusion_model.")
    elif family in IMAGE:
        _, state, _ = families_tiny.tiny(family)
        families_tiny.write(state, path)
    elif family in ENCODERS:
        import test_forward_encoders as encoders

        encoders._write(family, encoders._model(family)[0], path)
    elif family in INVENTORY:
        write_checkpoint(str(path), architectures.build_model(family.removeprefix("keys-"), "comfy"))
    else:
        tensors = [t for i, name in enumerate(("enc.layer0", "enc.layer1"))
                   for t in comfy_fp8_linear(name, (16, 16), seed=i)]
        write_checkpoint(str(path), tensors + [bf16_tensor("enc.norm.weight", torch.ones(16))])
    return path


def as_flavour(comfy: Path, flavour: str, path: Path) -> Path:
    """The same model as legacy scaled_fp8 (the same bytes under its names) or plain FP8 (each
    weight quantized again with scale 1.0, as a plain file holds it)."""
    state = load_file(str(comfy))
    out = {}
    for name, t in state.items():
        if flavour == "plain" and f"{name}_scale" in state:  # L.weight beside L.weight_scale
            t = (t.float() * state[f"{name}_scale"]).to(torch.float8_e4m3fn)
        if name.endswith(".comfy_quant") or (flavour == "plain" and name.endswith(".weight_scale")):
            continue
        out[name.removesuffix(".weight_scale") + ".scale_weight" if name.endswith(".weight_scale") else name] = t
    if flavour == "legacy":
        prefix = "model.diffusion_model." if any(n.startswith("model.diffusion_model.") for n in state) else ""
        out[prefix + "scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(out, str(path))
    return path


def fp8_layers(comfy: Path) -> list[str]:
    return sorted(n.removesuffix(".comfy_quant") for n in load_file(str(comfy)) if n.endswith(".comfy_quant"))


def decisions(doc: dict) -> dict[str, str]:
    """Each FP8 layer's fate from a `--json` report: scaled (FP8 activations), weight-only (a
    scale written beside the flag, or a text encoder's) or excluded (no scale)."""
    out = {layer["name"]: "scaled" if layer["fp8_activations"] else "weight-only" for layer in doc["layers"]}
    out.update({e["name"]: "excluded" for e in doc["excluded"]})
    return out
