"""LTX-2 and LTX-2.3 (audio and video streams)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, holds


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
FAMILY = Family(
    "ltx2", "dit",
    DetectionRule(("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",), "diffusers: ltx2",
                  "patchify_proj.weight", ("transformer_blocks.",), ("audio_adaln_single.linear.weight",)),
    variant,
    presets=PRESETS, edge_blocks=r"^transformer_blocks\.(\d+)\.",
    # q reads one stream, k and v the text or the other modality
    cross_attention=("audio_attn2", "audio_to_video_attn", "video_to_audio_attn"))
