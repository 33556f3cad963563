"""LTX-2 and LTX-2.3 (audio and video streams)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import rename_prefixes, self_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks, holds
from fp8stream.families.spec import TensorSpec, linear as _linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


def variant(bare, width, blocks) -> str:
    """LTX-2.3 gates its attentions (one logit per head) and modulates the text cross-attention."""
    return "ltx-2.3" if holds(bare, "transformer_blocks.0.attn1.to_gate_logits.weight") else "ltx-2"


PRESETS = (
    ("patchify_proj", "embedder"), ("audio_patchify_proj", "embedder"), ("*adaln_single.*", "embedder"),
    ("caption_projection.*", "embedder"), ("audio_caption_projection.*", "embedder"),
    ("*_embeddings_connector.*", "text connector"), ("proj_out", "final projection"),
    ("audio_proj_out", "final projection"),
)

# it carries LTX-Video's patchify_proj: tried before it


# LTX-2 inventory at real size (Lightricks / ComfyUI names), for scripts/bench.py --arch.
#
# 19B parameters: video width 4096 and audio width 2048 (32 heads each), 48 blocks each running
# video self-attention, text cross-attention, audio self- and cross-attention, audio-to-video and
# video-to-audio attention and both feed-forwards (4x); latents 128 channels per stream, Gemma
# text 3840 wide (after the text connectors, which ship apart here). Block linears FP8; the
# patchify projections, AdaLN embedders, caption projections and output projections BF16.


def ltx2_19b(blocks: int | None = None) -> list[TensorSpec]:
    v, a, caption, channels = 4096, 2048, 3840, 128
    n = 48 if blocks is None else blocks
    specs = [TensorSpec("scale_shift_table", (2, v), False), TensorSpec("audio_scale_shift_table", (2, a), False)]
    specs += _linear("patchify_proj", v, channels, False) + _linear("audio_patchify_proj", a, channels, False)
    for pre, w in (("", v), ("audio_", a)):
        specs += _linear(pre + "caption_projection.linear_1", w, caption, False)
        specs += _linear(pre + "caption_projection.linear_2", w, w, False)
    for name, w, mods in (("adaln_single", v, 6), ("audio_adaln_single", a, 6),
                          ("av_ca_video_scale_shift_adaln_single", v, 4),
                          ("av_ca_audio_scale_shift_adaln_single", a, 4), ("av_ca_a2v_gate_adaln_single", v, 1),
                          ("av_ca_v2a_gate_adaln_single", a, 1)):
        specs += _linear(name + ".emb.timestep_embedder.linear_1", w, 256, False)
        specs += _linear(name + ".emb.timestep_embedder.linear_2", w, w, False)
        specs += _linear(name + ".linear", mods * w, w, False)
    # attention -> (query width, key/value width, inner width)
    attns = {"attn1": (v, v, v), "attn2": (v, v, v), "audio_attn1": (a, a, a), "audio_attn2": (a, a, a),
             "audio_to_video_attn": (v, a, a), "video_to_audio_attn": (a, v, a)}
    for i in range(n):
        p = f"transformer_blocks.{i}."
        specs += [TensorSpec(p + "scale_shift_table", (6, v), False),
                  TensorSpec(p + "audio_scale_shift_table", (6, a), False),
                  TensorSpec(p + "scale_shift_table_a2v_ca_video", (5, v), False),
                  TensorSpec(p + "scale_shift_table_a2v_ca_audio", (5, a), False)]
        for name, (q, kv, inner) in attns.items():
            specs += [TensorSpec(f"{p}{name}.q_norm.weight", (inner,), False),
                      TensorSpec(f"{p}{name}.k_norm.weight", (inner,), False)]
            specs += _linear(f"{p}{name}.to_q", inner, q, True) + _linear(f"{p}{name}.to_k", inner, kv, True)
            specs += _linear(f"{p}{name}.to_v", inner, kv, True) + _linear(f"{p}{name}.to_out.0", q, inner, True)
        for ff, w in (("ff", v), ("audio_ff", a)):
            specs += _linear(f"{p}{ff}.net.0.proj", 4 * w, w, True) + _linear(f"{p}{ff}.net.2", w, 4 * w, True)
    specs += _linear("proj_out", channels, v, False) + _linear("audio_proj_out", channels, a, False)
    return specs


# The forward pass's model code (`--method forward`):
# LTX-2 audio-video DiT (Lightricks / ComfyUI names: patchify_proj, audio_patchify_proj,
# adaln_single, av_ca_*_adaln_single, transformer_blocks.N.{attn1, attn2, audio_attn1, audio_attn2,
# audio_to_video_attn, video_to_audio_attn, ff, audio_ff}, caption_projection, proj_out, ...).
#
# diffusers' LTX2VideoTransformer3DModel runs both streams in every block, so the synthetic
# samples carry both: packed video latents [batch, tokens, channels] and audio latents [batch,
# audio tokens, channels], a text state per stream (the text connectors' outputs: caption-wide
# for LTX-2.0, whose caption projections are in the transformer). Timesteps are in [0, 1000]
# (the pipelines pass t x timestep_scale_multiplier); video takes one per token: the first latent
# frame is the given image of image-to-video, clean at timestep 0, as LTX-2's i2v pipeline does.
# LTX-2 has 32 heads in both streams (ComfyUI reads the head width off attn2.to_k the same way;
# LTX-2.3's attention gates say it with one row per head); a width not divisible into 32 even
# heads (a small test model) gets heads of SMALL_HEAD_DIM. LTX-2.3 (gated attention, prompt
# AdaLN, captions projected before the transformer) maps too.
# The text connectors (`*_embeddings_connector`) run before the transformer: diffusers' converter
# drops them, the pass does not reach them.


HEADS = 32


SMALL_HEAD_DIM = 8


FPS = 24.0


# LTX-2.3's prompt modulation (diffusers' converter leaves these names as they are)
_RENAMES = {"prompt_adaln_single.": "prompt_adaln.", "audio_prompt_adaln_single.": "audio_prompt_adaln."}


def _heads(width: int, gate: tuple[int, ...] | None) -> tuple[int, int]:
    """(heads, head width): LTX-2.3's attention gates have one row per head; else 32 heads."""
    if gate:
        return gate[0], width // gate[0]
    if width % HEADS == 0 and (width // HEADS) % 2 == 0:
        return HEADS, width // HEADS
    return width // SMALL_HEAD_DIM, SMALL_HEAD_DIM


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels = shapes["patchify_proj.weight"]
    audio_inner, audio_in = shapes["audio_patchify_proj.weight"]
    b0 = "transformer_blocks.0."
    heads, head_dim = _heads(inner, shapes.get(b0 + "attn1.to_gate_logits.weight"))
    audio_heads, audio_head_dim = _heads(audio_inner, shapes.get(b0 + "audio_attn1.to_gate_logits.weight"))
    prompt_mod = b0 + "prompt_scale_shift_table" in shapes
    caption = shapes.get("caption_projection.linear_1.weight")
    return {
        "in_channels": in_channels,
        "out_channels": shapes["proj_out.weight"][0],
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "cross_attention_dim": shapes[b0 + "attn2.to_k.weight"][1],
        "audio_in_channels": audio_in,
        "audio_out_channels": shapes["audio_proj_out.weight"][0],
        "audio_num_attention_heads": audio_heads,
        "audio_attention_head_dim": audio_head_dim,
        "audio_cross_attention_dim": shapes[b0 + "audio_attn2.to_k.weight"][1],
        "num_layers": count_blocks(shapes, "transformer_blocks."),
        "caption_channels": caption[1] if caption else inner,
        "use_prompt_embeddings": caption is not None,
        "gated_attn": b0 + "attn1.to_gate_logits.weight" in shapes,
        "audio_gated_attn": b0 + "audio_attn1.to_gate_logits.weight" in shapes,
        "cross_attn_mod": prompt_mod,
        "audio_cross_attn_mod": prompt_mod,
        "use_prompt_adaln_single": "prompt_adaln_single.linear.weight" in shapes,
        "ff_bias": b0 + "ff.net.0.proj.bias" in shapes,
        "audio_ff_bias": b0 + "audio_ff.net.0.proj.bias" in shapes,
    }


def model_class():
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers as fn

    return rename_prefixes(fn(dict(state)), _RENAMES)


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    from fp8stream.families.samples import grid

    frames = 2
    h, w = grid(max(1, plan.image_tokens // frames))
    tokens, first = frames * h * w, h * w
    x0 = plan.randn(tokens, cfg["in_channels"])
    noise = plan.randn(tokens, cfg["in_channels"])
    t = plan.timesteps()
    video = plan.noised(x0, noise, t)
    video[:, :first] = x0[:, :first]  # image-to-video: the given first frame, clean
    timestep = (t * 1000.0)[:, None].repeat(1, tokens)
    timestep[:, :first] = 0.0
    audio_tokens = max(2, plan.image_tokens // 8)
    a0 = plan.randn(audio_tokens, cfg["audio_in_channels"])
    a_noise = plan.randn(audio_tokens, cfg["audio_in_channels"])
    caption = cfg["use_prompt_embeddings"]  # LTX-2.0: caption-wide states, projected inside
    text_width = cfg["caption_channels"] if caption else cfg["cross_attention_dim"]
    audio_text_width = cfg["caption_channels"] if caption else cfg["audio_cross_attention_dim"]
    return {
        "hidden_states": video,
        "audio_hidden_states": plan.noised(a0, a_noise, t),
        "encoder_hidden_states": plan.text(text_width),
        "audio_encoder_hidden_states": plan.text(audio_text_width),
        "timestep": timestep,  # diffusers' LTX-2 takes 0-1000 (already x timestep_scale_multiplier)
        "audio_timestep": t * 1000.0,
        "sigma": t * 1000.0,  # LTX-2.3's prompt modulation reads it (the pipelines pass the timestep)
        "num_frames": frames,
        "height": h,
        "width": w,
        "fps": FPS,
        "audio_num_frames": audio_tokens,
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Each attention's output projection reads the mix of its own values."""
    attentions = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
    return self_value_sources(f"transformer_blocks.{i}.{attn}." for i in range(cfg["num_layers"])
                              for attn in attentions)


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("audio_caption_projection.linear_1", "audio_caption_projection.linear_1"),
    ("audio_caption_projection.linear_2", "audio_caption_projection.linear_2"),
    ("audio_proj_in", "audio_patchify_proj"),
    ("audio_proj_out", "audio_proj_out"),
    ("audio_time_embed.emb.timestep_embedder.linear_1", "audio_adaln_single.emb.timestep_embedder.linear_1"),
    ("audio_time_embed.emb.timestep_embedder.linear_2", "audio_adaln_single.emb.timestep_embedder.linear_2"),
    ("audio_time_embed.linear", "audio_adaln_single.linear"),
    (
        "av_cross_attn_audio_scale_shift.emb.timestep_embedder.linear_1",
        "av_ca_audio_scale_shift_adaln_single.emb.timestep_embedder.linear_1",
    ),
    (
        "av_cross_attn_audio_scale_shift.emb.timestep_embedder.linear_2",
        "av_ca_audio_scale_shift_adaln_single.emb.timestep_embedder.linear_2",
    ),
    ("av_cross_attn_audio_scale_shift.linear", "av_ca_audio_scale_shift_adaln_single.linear"),
    (
        "av_cross_attn_audio_v2a_gate.emb.timestep_embedder.linear_1",
        "av_ca_v2a_gate_adaln_single.emb.timestep_embedder.linear_1",
    ),
    (
        "av_cross_attn_audio_v2a_gate.emb.timestep_embedder.linear_2",
        "av_ca_v2a_gate_adaln_single.emb.timestep_embedder.linear_2",
    ),
    ("av_cross_attn_audio_v2a_gate.linear", "av_ca_v2a_gate_adaln_single.linear"),
    (
        "av_cross_attn_video_a2v_gate.emb.timestep_embedder.linear_1",
        "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1",
    ),
    (
        "av_cross_attn_video_a2v_gate.emb.timestep_embedder.linear_2",
        "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_2",
    ),
    ("av_cross_attn_video_a2v_gate.linear", "av_ca_a2v_gate_adaln_single.linear"),
    (
        "av_cross_attn_video_scale_shift.emb.timestep_embedder.linear_1",
        "av_ca_video_scale_shift_adaln_single.emb.timestep_embedder.linear_1",
    ),
    (
        "av_cross_attn_video_scale_shift.emb.timestep_embedder.linear_2",
        "av_ca_video_scale_shift_adaln_single.emb.timestep_embedder.linear_2",
    ),
    ("av_cross_attn_video_scale_shift.linear", "av_ca_video_scale_shift_adaln_single.linear"),
    ("caption_projection.linear_1", "caption_projection.linear_1"),
    ("caption_projection.linear_2", "caption_projection.linear_2"),
    ("proj_in", "patchify_proj"),
    ("proj_out", "proj_out"),
    ("time_embed.emb.timestep_embedder.linear_1", "adaln_single.emb.timestep_embedder.linear_1"),
    ("time_embed.emb.timestep_embedder.linear_2", "adaln_single.emb.timestep_embedder.linear_2"),
    ("time_embed.linear", "adaln_single.linear"),
    ("transformer_blocks.{}.attn1.to_k", "transformer_blocks.{}.attn1.to_k"),
    ("transformer_blocks.{}.attn1.to_out.0", "transformer_blocks.{}.attn1.to_out.0"),
    ("transformer_blocks.{}.attn1.to_q", "transformer_blocks.{}.attn1.to_q"),
    ("transformer_blocks.{}.attn1.to_v", "transformer_blocks.{}.attn1.to_v"),
    ("transformer_blocks.{}.attn2.to_k", "transformer_blocks.{}.attn2.to_k"),
    ("transformer_blocks.{}.attn2.to_out.0", "transformer_blocks.{}.attn2.to_out.0"),
    ("transformer_blocks.{}.attn2.to_q", "transformer_blocks.{}.attn2.to_q"),
    ("transformer_blocks.{}.attn2.to_v", "transformer_blocks.{}.attn2.to_v"),
    ("transformer_blocks.{}.audio_attn1.to_k", "transformer_blocks.{}.audio_attn1.to_k"),
    ("transformer_blocks.{}.audio_attn1.to_out.0", "transformer_blocks.{}.audio_attn1.to_out.0"),
    ("transformer_blocks.{}.audio_attn1.to_q", "transformer_blocks.{}.audio_attn1.to_q"),
    ("transformer_blocks.{}.audio_attn1.to_v", "transformer_blocks.{}.audio_attn1.to_v"),
    ("transformer_blocks.{}.audio_attn2.to_k", "transformer_blocks.{}.audio_attn2.to_k"),
    ("transformer_blocks.{}.audio_attn2.to_out.0", "transformer_blocks.{}.audio_attn2.to_out.0"),
    ("transformer_blocks.{}.audio_attn2.to_q", "transformer_blocks.{}.audio_attn2.to_q"),
    ("transformer_blocks.{}.audio_attn2.to_v", "transformer_blocks.{}.audio_attn2.to_v"),
    ("transformer_blocks.{}.audio_ff.net.0.proj", "transformer_blocks.{}.audio_ff.net.0.proj"),
    ("transformer_blocks.{}.audio_ff.net.2", "transformer_blocks.{}.audio_ff.net.2"),
    ("transformer_blocks.{}.audio_to_video_attn.to_k", "transformer_blocks.{}.audio_to_video_attn.to_k"),
    ("transformer_blocks.{}.audio_to_video_attn.to_out.0", "transformer_blocks.{}.audio_to_video_attn.to_out.0"),
    ("transformer_blocks.{}.audio_to_video_attn.to_q", "transformer_blocks.{}.audio_to_video_attn.to_q"),
    ("transformer_blocks.{}.audio_to_video_attn.to_v", "transformer_blocks.{}.audio_to_video_attn.to_v"),
    ("transformer_blocks.{}.ff.net.0.proj", "transformer_blocks.{}.ff.net.0.proj"),
    ("transformer_blocks.{}.ff.net.2", "transformer_blocks.{}.ff.net.2"),
    ("transformer_blocks.{}.video_to_audio_attn.to_k", "transformer_blocks.{}.video_to_audio_attn.to_k"),
    ("transformer_blocks.{}.video_to_audio_attn.to_out.0", "transformer_blocks.{}.video_to_audio_attn.to_out.0"),
    ("transformer_blocks.{}.video_to_audio_attn.to_q", "transformer_blocks.{}.video_to_audio_attn.to_q"),
    ("transformer_blocks.{}.video_to_audio_attn.to_v", "transformer_blocks.{}.video_to_audio_attn.to_v"),
)
# end of derived renames


FAMILY = Family(
    "ltx2", "dit",
    DetectionRule(("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",), "diffusers: ltx2",
                  "patchify_proj.weight", ("transformer_blocks.",), ("audio_adaln_single.linear.weight",)),
    variant,
    presets=PRESETS, edge_blocks=r"^transformer_blocks\.(\d+)\.",
    # q reads one stream, k and v the text or the other modality
    cross_attention=("audio_attn2", "audio_to_video_attn", "video_to_audio_attn"),
    inventories=(("ltx2", ltx2_19b),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
