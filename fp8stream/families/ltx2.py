"""LTX-2 and LTX-2.3 (audio and video streams)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, holds


def variant(bare, width, blocks) -> str:
    """LTX-2.3 gates its attentions (one logit per head) and modulates the text cross-attention."""
    return "ltx-2.3" if holds(bare, "transformer_blocks.0.attn1.to_gate_logits.weight") else "ltx-2"


# it carries LTX-Video's patchify_proj: tried before it
FAMILY = Family(
    "ltx2", "dit",
    DetectionRule(("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",), "diffusers: ltx2",
                  "patchify_proj.weight", ("transformer_blocks.",), ("audio_adaln_single.linear.weight",)),
    variant)
