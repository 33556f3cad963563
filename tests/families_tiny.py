"""Tiny random image-family models under the names ComfyUI's files use, one shape list each.

The names are written out here by hand from diffusers' single-file converters and ComfyUI's
loader (comfy/model_detection.py, comfy/ldm/*): BFL names for Flux.2 and Chroma, diffusers'
own names for Qwen-Image and HiDream (their converters are the identity), the original names
(fused qkv, `x_embedder`, `final_layer`) for Z-Image and Lumina 2. The model is built with
diffusers' class from the config the family derives from these shapes, and its parameters are
placed under these names through the inverse of the row-id mapping (forward_tiny.to_original):
a name or shape the converter does not expect fails the mapping check, so the list cannot
drift from what diffusers reads.
"""

from __future__ import annotations

import torch

import forward_tiny as ft
from fp8stream.families import by_name

D, HEAD, JOINT, CH = 64, 16, 32, 8  # width, head width, text width, latent channels


def _lin(s: dict, name: str, rows: int, cols: int, bias: bool = True) -> None:
    s[name + ".weight"] = (rows, cols)
    if bias:
        s[name + ".bias"] = (rows,)


def flux2_shapes(double: int = 2, single: int = 2, guidance: bool = False, mlp: int = 3 * D) -> dict:
    s: dict = {}
    _lin(s, "img_in", D, CH, False)
    _lin(s, "txt_in", D, JOINT, False)
    embedders = ["time_in"] + (["guidance_in"] if guidance else [])
    for e in embedders:
        _lin(s, e + ".in_layer", D, 32, False)
        _lin(s, e + ".out_layer", D, D, False)
    _lin(s, "double_stream_modulation_img.lin", 6 * D, D, False)
    _lin(s, "double_stream_modulation_txt.lin", 6 * D, D, False)
    _lin(s, "single_stream_modulation.lin", 3 * D, D, False)
    for i in range(double):
        for side in ("img", "txt"):
            p = f"double_blocks.{i}.{side}"
            _lin(s, p + "_attn.qkv", 3 * D, D, False)
            s[p + "_attn.norm.query_norm.scale"] = (HEAD,)
            s[p + "_attn.norm.key_norm.scale"] = (HEAD,)
            _lin(s, p + "_attn.proj", D, D, False)
            _lin(s, p + "_mlp.0", 2 * mlp, D, False)
            _lin(s, p + "_mlp.2", D, mlp, False)
    for i in range(single):
        p = f"single_blocks.{i}."
        _lin(s, p + "linear1", 3 * D + 2 * mlp, D, False)
        _lin(s, p + "linear2", D, D + mlp, False)
        s[p + "norm.query_norm.scale"] = (HEAD,)
        s[p + "norm.key_norm.scale"] = (HEAD,)
    _lin(s, "final_layer.adaLN_modulation.1", 2 * D, D, False)
    _lin(s, "final_layer.linear", CH, D, False)
    return s


def chroma_shapes(double: int = 2, single: int = 2, approximator: int = 2) -> dict:
    s: dict = {}
    _lin(s, "img_in", D, CH)
    _lin(s, "txt_in", D, JOINT)
    g = "distilled_guidance_layer."
    _lin(s, g + "in_proj", 32, 16)
    for i in range(approximator):
        _lin(s, f"{g}layers.{i}.in_layer", 32, 32)
        _lin(s, f"{g}layers.{i}.out_layer", 32, 32)
        s[f"{g}norms.{i}.scale"] = (32,)
    _lin(s, g + "out_proj", D, 32)
    for i in range(double):
        for side in ("img", "txt"):
            p = f"double_blocks.{i}.{side}"
            _lin(s, p + "_attn.qkv", 3 * D, D)
            s[p + "_attn.norm.query_norm.scale"] = (HEAD,)
            s[p + "_attn.norm.key_norm.scale"] = (HEAD,)
            _lin(s, p + "_attn.proj", D, D)
            _lin(s, p + "_mlp.0", 4 * D, D)
            _lin(s, p + "_mlp.2", D, 4 * D)
    for i in range(single):
        p = f"single_blocks.{i}."
        _lin(s, p + "linear1", 7 * D, D)
        _lin(s, p + "linear2", D, 5 * D)
        s[p + "norm.query_norm.scale"] = (HEAD,)
        s[p + "norm.key_norm.scale"] = (HEAD,)
    _lin(s, "final_layer.linear", CH, D)
    return s


def qwen_image_shapes(layers: int = 2) -> dict:
    """ComfyUI's Qwen-Image files use diffusers' names: the model's own state dict is the list."""
    cfg = {"patch_size": 2, "in_channels": 4 * CH, "out_channels": CH, "num_layers": layers, "attention_head_dim": HEAD,
           "num_attention_heads": D // HEAD, "joint_attention_dim": JOINT, "axes_dims_rope": (4, 6, 6)}
    return _own_names("qwen-image", cfg)


def _own_names(family: str, cfg: dict) -> dict:
    from fp8stream.methods.forward.engine import parameters_on_meta

    with parameters_on_meta():
        model = by_name(family).model.model_class()(**cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k in dict(model.named_parameters())}


def z_image_shapes(layers: int = 2, refiners: int = 1) -> dict:
    """Z-Image's original names: diffusers' model with the converter's renames undone and the
    attention's q, k, v fused into qkv."""
    cfg = {"in_channels": CH, "dim": D, "n_layers": layers, "n_refiner_layers": refiners, "n_heads": D // HEAD,
           "n_kv_heads": D // HEAD, "cap_feat_dim": JOINT, "axes_dims": [4, 6, 6], "axes_lens": [64, 32, 32]}
    out: dict = {}
    for name, shape in _own_names("z-image", cfg).items():
        for new, old in (("all_x_embedder.2-1.", "x_embedder."), ("all_final_layer.2-1.", "final_layer."),
                         ("attention.to_out.0.", "attention.out."), ("norm_q.", "q_norm."), ("norm_k.", "k_norm.")):
            name = name.replace(new, old)
        if ".attention.to_q." in name:
            out[name.replace(".to_q.", ".qkv.")] = (3 * shape[0],) + shape[1:]
        elif not any(f".attention.to_{x}." in name for x in "kv"):
            out[name] = shape
    return out


LUMINA2_NAMES = (("time_caption_embed.caption_embedder", "cap_embedder"),
                 ("time_caption_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                 ("time_caption_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                 ("norm_out.linear_1", "final_layer.adaLN_modulation.1"), ("norm_out.linear_2", "final_layer.linear"),
                 (".attn.", ".attention."), (".to_out.0.", ".out."), ("norm_q", "q_norm"), ("norm_k", "k_norm"),
                 ("feed_forward.linear_", "feed_forward.w"), ("norm1.linear", "adaLN_modulation.1"),
                 ("norm1.norm", "attention_norm1"), (".norm1.", ".attention_norm1."), (".norm2.", ".attention_norm2."))


def lumina2_shapes(layers: int = 2, refiners: int = 1) -> dict:
    """Lumina 2's original names: diffusers' model with the converter's renames undone and the
    attention's q, k, v (grouped: 2 key/value heads of 4) fused into qkv."""
    cfg = {"in_channels": CH, "hidden_size": D, "num_layers": layers, "num_refiner_layers": refiners,
           "num_attention_heads": D // HEAD, "num_kv_heads": 2, "multiple_of": 256, "axes_dim_rope": (8, 4, 4),
           "cap_feat_dim": JOINT}
    own = _own_names("lumina2", cfg)
    out: dict = {}
    for name, shape in own.items():
        original = name
        for new, old in LUMINA2_NAMES:
            original = original.replace(new, old)
        if ".attn.to_q." in name:
            kv = own[name.replace("to_q", "to_k")][0]
            out[original.replace(".to_q.", ".qkv.")] = (shape[0] + 2 * kv,) + shape[1:]
        elif not any(f".attn.to_{x}." in name for x in "kv"):
            out[original] = shape
    return out


def hidream_shapes(double: int = 1, single: int = 1) -> dict:
    """ComfyUI's HiDream files use diffusers' names: the model's own state dict is the list."""
    cfg = {"patch_size": 2, "in_channels": CH, "num_layers": double, "num_single_layers": single,
           "attention_head_dim": HEAD, "num_attention_heads": D // HEAD, "caption_channels": [JOINT, 24],
           "text_emb_dim": 20, "num_routed_experts": 4, "num_activated_experts": 2, "axes_dims_rope": (8, 4, 4),
           "llama_layers": [0] * (double + single)}
    return _own_names("hidream", cfg)


SHAPES = {"flux2": flux2_shapes, "chroma": chroma_shapes, "qwen-image": qwen_image_shapes,
          "z-image": z_image_shapes, "lumina2": lumina2_shapes,
          "hidream": hidream_shapes}


def tiny(family: str, seed: int = 0, **kw) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    """(diffusers model in float32, its state under ComfyUI's names, the family config)."""
    fam = by_name(family).model
    shapes = SHAPES[family](**kw)
    cfg = fam.config(shapes)
    torch.manual_seed(seed)
    model = fam.model_class()(**cfg).float().eval()
    with torch.no_grad():  # random init leaves zero modulation/out layers: make every layer matter
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() < 2 else p.shape[-1] ** -0.5))
    return model, ft.to_original(model.state_dict(), shapes, family, cfg), cfg


def write(state: dict[str, torch.Tensor], path, prefix: str = "model.diffusion_model.") -> list[str]:
    """Every 2-D weight as an FP8 linear, except MoE router gates (a plain parameter, not a
    Linear: FP8 exports leave it in BF16); returns the FP8 layer names."""
    layers = [n for n in ft.fp8_linears(state) if not n.endswith(".gate")]
    ft.qm.write_fp8_checkpoint({prefix + k: v for k, v in state.items()}, [prefix + n for n in layers], path)
    return [prefix + n for n in layers]
