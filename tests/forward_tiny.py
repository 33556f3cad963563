"""Tiny random Flux, SD3 and Wan models for the forward-pass tests: built with diffusers'
classes, saved under the checkpoint names ComfyUI's files use (original / BFL names), FP8.

The original names and shapes are listed here by hand; the diffusers -> original direction is
the inverse of the row-id mapping (fp8stream.methods.forward.mapping), so a wrong mapping cannot make a
test pass: the eager reference runs the diffusers model with its own parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import quality_models as qm  # noqa: E402
from fp8stream.families import by_name  # noqa: E402
from fp8stream.methods.forward.mapping import derive_mapping  # noqa: E402

D, HEAD, JOINT, POOLED = 64, 16, 32, 24


def _linear(out: dict, name: str, rows: int, cols: int, bias: bool = True) -> None:
    out[name + ".weight"] = (rows, cols)
    if bias:
        out[name + ".bias"] = (rows,)


def sd3_shapes(layers: int = 2, dual: tuple[int, ...] = (0,), channels: int = 4, patch: int = 2,
               max_size: int = 8) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {"pos_embed": (1, max_size * max_size, D),
                                     "x_embedder.proj.weight": (D, channels, patch, patch),
                                     "x_embedder.proj.bias": (D,)}
    _linear(s, "t_embedder.mlp.0", D, 256)
    _linear(s, "t_embedder.mlp.2", D, D)
    _linear(s, "y_embedder.mlp.0", D, POOLED)
    _linear(s, "y_embedder.mlp.2", D, D)
    _linear(s, "context_embedder", D, JOINT)
    for i in range(layers):
        for part in ("x_block", "context_block"):
            p = f"joint_blocks.{i}.{part}"
            last_ctx = part == "context_block" and i == layers - 1
            mods = 2 if last_ctx else (9 if part == "x_block" and i in dual else 6)
            _linear(s, p + ".adaLN_modulation.1", mods * D, D)
            attns = ["attn", "attn2"] if part == "x_block" and i in dual else ["attn"]
            for a in attns:
                _linear(s, f"{p}.{a}.qkv", 3 * D, D)
                s[f"{p}.{a}.ln_q.weight"] = (HEAD,)
                s[f"{p}.{a}.ln_k.weight"] = (HEAD,)
                if not last_ctx:
                    _linear(s, f"{p}.{a}.proj", D, D)
            if not last_ctx:
                _linear(s, p + ".mlp.fc1", 4 * D, D)
                _linear(s, p + ".mlp.fc2", D, 4 * D)
    _linear(s, "final_layer.adaLN_modulation.1", 2 * D, D)
    _linear(s, "final_layer.linear", patch * patch * channels, D)
    return s


def wan_shapes(layers: int = 2, image: bool = True, channels: int = 4, text: int = JOINT,
               freq: int = 32, ffn: int = 128, in_channels: int | None = None) -> dict[str, tuple[int, ...]]:
    """Wan 2.x names; `in_channels` above `channels`: the latent plus concatenated conditioning
    (Wan 2.2 i2v-A14B: 16 + 4 mask + 16 image latent, no image branch: image=False)."""
    s: dict[str, tuple[int, ...]] = {"patch_embedding.weight": (D, in_channels or channels, 1, 2, 2),
                                     "patch_embedding.bias": (D,)}
    _linear(s, "text_embedding.0", D, text)
    _linear(s, "text_embedding.2", D, D)
    _linear(s, "time_embedding.0", D, freq)
    _linear(s, "time_embedding.2", D, D)
    _linear(s, "time_projection.1", 6 * D, D)
    for i in range(layers):
        p = f"blocks.{i}"
        for a in ("self_attn", "cross_attn"):
            for x in "qkvo":
                _linear(s, f"{p}.{a}.{x}", D, D)
            s[f"{p}.{a}.norm_q.weight"] = (D,)
            s[f"{p}.{a}.norm_k.weight"] = (D,)
        if image:
            _linear(s, f"{p}.cross_attn.k_img", D, D)
            _linear(s, f"{p}.cross_attn.v_img", D, D)
            s[f"{p}.cross_attn.norm_k_img.weight"] = (D,)
        s[f"{p}.norm3.weight"], s[f"{p}.norm3.bias"] = (D,), (D,)
        _linear(s, f"{p}.ffn.0", ffn, D)
        _linear(s, f"{p}.ffn.2", D, ffn)
        s[f"{p}.modulation"] = (1, 6, D)
    _linear(s, "head.head", 4 * channels, D)
    s["head.modulation"] = (1, 2, D)
    if image:
        s["img_emb.proj.0.weight"], s["img_emb.proj.0.bias"] = (JOINT,), (JOINT,)
        _linear(s, "img_emb.proj.1", JOINT, JOINT)
        _linear(s, "img_emb.proj.3", D, JOINT)
        s["img_emb.proj.4.weight"], s["img_emb.proj.4.bias"] = (D,), (D,)
    return s


def hunyuan_video15_shapes(layers: int = 2, refiners: int = 1, channels: int = 4, split_qkv: bool = False,
                           meanflow: bool = False, glyph: int = 24, image: int = 24) -> dict[str, tuple[int, ...]]:
    """HunyuanVideo 1.5 under ComfyUI's (Tencent's) names; `split_qkv`: the original release's
    separate img_attn_q/k/v. ByT5's projection is 2048 wide inside (diffusers hard-codes it)."""
    s: dict[str, tuple[int, ...]] = {"img_in.proj.weight": (D, 2 * channels + 1, 1, 1, 1), "img_in.proj.bias": (D,),
                                     "cond_type_embedding.weight": (3, D)}
    for t in ("time_in", "txt_in.t_embedder") + (("time_r_in",) if meanflow else ()):
        _linear(s, t + ".mlp.0", D, 256)
        _linear(s, t + ".mlp.2", D, D)
    _linear(s, "txt_in.input_embedder", D, JOINT)
    _linear(s, "txt_in.c_embedder.linear_1", D, JOINT)
    _linear(s, "txt_in.c_embedder.linear_2", D, D)
    for i in range(refiners):
        p = f"txt_in.individual_token_refiner.blocks.{i}."
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"], s[p + n + ".bias"] = (D,), (D,)
        _linear(s, p + "self_attn_qkv", 3 * D, D)
        _linear(s, p + "self_attn_proj", D, D)
        _linear(s, p + "mlp.fc1", 4 * D, D)
        _linear(s, p + "mlp.fc2", D, 4 * D)
        _linear(s, p + "adaLN_modulation.1", 2 * D, D)
    s["byt5_in.layernorm.weight"], s["byt5_in.layernorm.bias"] = (glyph,), (glyph,)
    _linear(s, "byt5_in.fc1", 2048, glyph)
    _linear(s, "byt5_in.fc2", 2048, 2048)
    _linear(s, "byt5_in.fc3", D, 2048)
    s["vision_in.proj.0.weight"], s["vision_in.proj.0.bias"] = (image,), (image,)
    _linear(s, "vision_in.proj.1", image, image)
    _linear(s, "vision_in.proj.3", D, image)
    s["vision_in.proj.4.weight"], s["vision_in.proj.4.bias"] = (D,), (D,)
    for i in range(layers):
        for st in ("img", "txt"):
            p = f"double_blocks.{i}.{st}_"
            _linear(s, p + "mod.linear", 6 * D, D)
            for x in ("q", "k", "v") if split_qkv else ("qkv",):
                _linear(s, p + "attn_" + x, (1 if split_qkv else 3) * D, D)
            s[p + "attn_q_norm.weight"], s[p + "attn_k_norm.weight"] = (HEAD,), (HEAD,)
            _linear(s, p + "attn_proj", D, D)
            _linear(s, p + "mlp.fc1", 4 * D, D)
            _linear(s, p + "mlp.fc2", D, 4 * D)
    _linear(s, "final_layer.linear", channels, D)
    _linear(s, "final_layer.adaLN_modulation.1", 2 * D, D)
    return s


def ltx2_shapes(layers: int = 2, channels: int = 8, audio: int = 32, audio_channels: int = 8,
                caption: int = 24, v23: bool = False) -> dict[str, tuple[int, ...]]:
    """LTX-2.0 under ComfyUI's (Lightricks') names: video width D, audio width `audio`. `v23`:
    LTX-2.3's layout (4 gated heads per stream, prompt AdaLN, no caption projection inside)."""
    s: dict[str, tuple[int, ...]] = {"scale_shift_table": (2, D), "audio_scale_shift_table": (2, audio)}
    _linear(s, "patchify_proj", D, channels)
    _linear(s, "audio_patchify_proj", audio, audio_channels)
    for pre, w in (("", D), ("audio_", audio)) if not v23 else ():
        _linear(s, pre + "caption_projection.linear_1", w, caption)
        _linear(s, pre + "caption_projection.linear_2", w, w)
    n_mod = 9 if v23 else 6
    prompt = (("prompt_adaln_single", D, 2), ("audio_prompt_adaln_single", audio, 2)) if v23 else ()
    for name, w, mods in (("adaln_single", D, n_mod), ("audio_adaln_single", audio, n_mod), *prompt,
                          ("av_ca_video_scale_shift_adaln_single", D, 4),
                          ("av_ca_audio_scale_shift_adaln_single", audio, 4),
                          ("av_ca_a2v_gate_adaln_single", D, 1), ("av_ca_v2a_gate_adaln_single", audio, 1)):
        _linear(s, name + ".emb.timestep_embedder.linear_1", w, 256)
        _linear(s, name + ".emb.timestep_embedder.linear_2", w, w)
        _linear(s, name + ".linear", mods * w, w)
    # attention -> (query width, key/value width, inner width)
    attns = {"attn1": (D, D, D), "attn2": (D, D, D), "audio_attn1": (audio, audio, audio),
             "audio_attn2": (audio, audio, audio), "audio_to_video_attn": (D, audio, audio),
             "video_to_audio_attn": (audio, D, audio)}
    for i in range(layers):
        p = f"transformer_blocks.{i}."
        s[p + "scale_shift_table"], s[p + "audio_scale_shift_table"] = (9 if v23 else 6, D), (9 if v23 else 6, audio)
        if v23:
            s[p + "prompt_scale_shift_table"], s[p + "audio_prompt_scale_shift_table"] = (2, D), (2, audio)
        s[p + "scale_shift_table_a2v_ca_video"], s[p + "scale_shift_table_a2v_ca_audio"] = (5, D), (5, audio)
        for a, (q, kv, inner) in attns.items():
            s[f"{p}{a}.q_norm.weight"], s[f"{p}{a}.k_norm.weight"] = (inner,), (inner,)
            _linear(s, f"{p}{a}.to_q", inner, q)
            _linear(s, f"{p}{a}.to_k", inner, kv)
            _linear(s, f"{p}{a}.to_v", inner, kv)
            _linear(s, f"{p}{a}.to_out.0", q, inner)
            if v23:
                _linear(s, f"{p}{a}.to_gate_logits", 4, q)
        for ff, w in (("ff", D), ("audio_ff", audio)):
            _linear(s, f"{p}{ff}.net.0.proj", 4 * w, w)
            _linear(s, f"{p}{ff}.net.2", w, 4 * w)
    _linear(s, "proj_out", channels, D)
    _linear(s, "audio_proj_out", audio_channels, audio)
    return s


def cosmos_shapes(layers: int = 2, channels: int = 4, video2world: bool = True, lora: int = 16,
                  learnable_pos: bool = False) -> dict[str, tuple[int, ...]]:
    """Cosmos Predict2 under ComfyUI's (NVIDIA's) names; patches 1x2x2, no biases. The patch
    embedding reads the latent, Video2World's condition mask and the padding mask."""
    s: dict[str, tuple[int, ...]] = {"x_embedder.proj.1.weight": (D, (channels + 1 + video2world) * 4),
                                     "t_embedder.1.linear_1.weight": (D, D), "t_embedder.1.linear_2.weight": (3 * D, D),
                                     "t_embedding_norm.weight": (D,)}
    if learnable_pos:
        s.update({f"extra_pos_embedder.pos_emb_{a}": (8, D) for a in "thw"})
    for i in range(layers):
        p = f"blocks.{i}."
        for part in ("self_attn", "cross_attn", "mlp"):
            s[f"{p}adaln_modulation_{part}.1.weight"] = (lora, D)
            s[f"{p}adaln_modulation_{part}.2.weight"] = (3 * D, lora)
        for a, kv in (("self_attn", D), ("cross_attn", JOINT)):
            s[f"{p}{a}.q_proj.weight"], s[f"{p}{a}.output_proj.weight"] = (D, D), (D, D)
            s[f"{p}{a}.k_proj.weight"], s[f"{p}{a}.v_proj.weight"] = (D, kv), (D, kv)
            s[f"{p}{a}.q_norm.weight"], s[f"{p}{a}.k_norm.weight"] = (HEAD,), (HEAD,)
        s[p + "mlp.layer1.weight"], s[p + "mlp.layer2.weight"] = (4 * D, D), (D, 4 * D)
    s["final_layer.adaln_modulation.1.weight"] = (lora, D)
    s["final_layer.adaln_modulation.2.weight"] = (2 * D, lora)
    s["final_layer.linear.weight"] = (4 * channels, D)
    return s


def auraflow_shapes(double: int = 2, single: int = 2, width: int = 96, channels: int = 4,
                    positions: int = 64) -> dict[str, tuple[int, ...]]:
    """AuraFlow under ComfyUI's (the original) names, comfy/ldm/aura/mmdit.py: 12 heads (every
    release's, so the width is a multiple of 12), 2x2 patches, a gated MLP of
    find_multiple(int(2 * 4 * width / 3), 256), biases only in the patch and time embedders."""
    mlp = -(-int(8 * width / 3) // 256) * 256
    s: dict[str, tuple[int, ...]] = {"positional_encoding": (1, positions, width), "register_tokens": (1, 8, width)}
    _linear(s, "init_x_linear", width, 4 * channels)
    _linear(s, "cond_seq_linear", width, JOINT, bias=False)
    _linear(s, "t_embedder.mlp.0", width, 256)
    _linear(s, "t_embedder.mlp.2", width, width)
    blocks = [(f"double_layers.{i}.", ("w1", "w2"), ("C", "X")) for i in range(double)]
    blocks += [(f"single_layers.{i}.", ("w1",), ("CX",)) for i in range(single)]
    for p, attns, streams in blocks:
        for a in attns:
            for x in "qkvo":
                _linear(s, f"{p}attn.{a}{x}", width, width, bias=False)
        for st in streams:
            _linear(s, f"{p}mod{st}.1", 6 * width, width, bias=False)
            mlp_name = f"{p}mlp{st if len(streams) == 2 else ''}."
            _linear(s, mlp_name + "c_fc1", mlp, width, bias=False)
            _linear(s, mlp_name + "c_fc2", mlp, width, bias=False)
            _linear(s, mlp_name + "c_proj", width, mlp, bias=False)
    _linear(s, "modF.1", 2 * width, width, bias=False)
    _linear(s, "final_linear", 4 * channels, width, bias=False)
    return s


def flux_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    model = by_name("flux").model.model_class()(**cfg)
    return {k: tuple(v.shape) for k, v in qm.diffusers_to_comfy(model.state_dict(), cfg).items()}


def to_original(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], family: str,
                cfg: dict) -> dict[str, torch.Tensor]:
    """A diffusers state dict under the original names, through the inverse row mapping."""
    fam = by_name(family).model
    mapping = derive_mapping(shapes, "", lambda st: fam.convert(st, cfg))
    out = {n: torch.full(shape, float("nan")) for n, shape in shapes.items()}
    for target, runs in mapping.items():
        value = state[target].reshape(state[target].shape[0] if state[target].dim() else 1, -1)
        pos = 0
        for r in runs:
            dst = out[r.source].view(out[r.source].shape[0] if out[r.source].dim() else 1, -1)
            dst[r.start:r.stop] = value[pos:pos + r.stop - r.start]
            pos += r.stop - r.start
    missing = [n for n, t in out.items() if torch.isnan(t).any()]
    assert not missing, f"original tensors not filled: {missing[:5]}"
    return out


def tiny(family: str, seed: int = 0, **kw) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    """(diffusers model in float32, its state under original names, the family config)."""
    fam = by_name(family).model
    torch.manual_seed(seed)
    if family == "flux":
        cfg = fam.config(flux_shapes(_flux_cfg()))
        shapes = flux_shapes(cfg)
    else:
        shapes = SHAPES[family](**kw)
        cfg = fam.config(shapes)
    model = fam.model_class()(**cfg).float().eval()
    with torch.no_grad():  # random init gives zero modulation/out layers: make every layer matter
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() < 2 else p.shape[-1] ** -0.5))
        for name, b in model.named_buffers():  # a stored buffer must come from the file (SD3 pos_embed)
            if name in model.state_dict() and b.is_floating_point():
                b.copy_(torch.randn_like(b))
    return model, to_original(model.state_dict(), shapes, family, cfg), cfg


SHAPES = {"sd3": sd3_shapes, "wan": wan_shapes, "hunyuan-video-1.5": hunyuan_video15_shapes, "ltx2": ltx2_shapes,
          "cosmos": cosmos_shapes, "auraflow": auraflow_shapes}
NOT_LINEAR = ("cond_type_embedding.",)  # 2-D weights that are no Linear's: BF16 in FP8 files


def _flux_cfg() -> dict:
    return {"patch_size": 1, "in_channels": 4, "num_layers": 2, "num_single_layers": 2, "attention_head_dim": HEAD,
            "num_attention_heads": D // HEAD, "joint_attention_dim": JOINT, "pooled_projection_dim": POOLED,
            "guidance_embeds": True, "axes_dims_rope": (4, 6, 6)}


def fp8_linears(state: dict[str, torch.Tensor]) -> list[str]:
    """Every 2-D weight (the FP8 layers of the test checkpoints)."""
    return sorted(n[:-7] for n, t in state.items()
                  if n.endswith(".weight") and t.dim() == 2 and not n.startswith(NOT_LINEAR))


def write(state: dict[str, torch.Tensor], path: Path, prefix: str = "") -> list[str]:
    layers = fp8_linears(state)
    qm.write_fp8_checkpoint({prefix + k: v for k, v in state.items()}, [prefix + n for n in layers], path)
    return [prefix + n for n in layers]


def comfy_file(family: str, folder: Path) -> Path:
    """The tiny model of `family` as ComfyUI ships it (FP8 layers, `model.diffusion_model.` prefix)."""
    path = folder / f"{family}.safetensors"
    _, state, _ = tiny(family)
    write(state, path, "model.diffusion_model.")
    return path
