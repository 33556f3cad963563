"""LTX-2 and LTX-2.3 (audio and video streams)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, holds
from fp8stream.families.spec import TensorSpec, linear as _linear


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


FAMILY = Family(
    "ltx2", "dit",
    DetectionRule(("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",), "diffusers: ltx2",
                  "patchify_proj.weight", ("transformer_blocks.",), ("audio_adaln_single.linear.weight",)),
    variant,
    presets=PRESETS, edge_blocks=r"^transformer_blocks\.(\d+)\.",
    # q reads one stream, k and v the text or the other modality
    cross_attention=("audio_attn2", "audio_to_video_attn", "video_to_audio_attn"),
    inventories=(("ltx2", ltx2_19b),))
