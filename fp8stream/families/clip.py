"""CLIP-L / CLIP-G text encoders (transformers' names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.text_models import build, renamed
from fp8stream.families.tokens import Specials, token_batch

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan



# The forward pass's model code (`--method forward`):
# CLIP text encoders (ComfyUI's clip_l / clip_g files, transformers' names:
# text_model.embeddings.token_embedding, text_model.encoder.layers.N.self_attn.q_proj, ...,
# text_projection for CLIP-G).
#
# Heads of 64 (CLIP-L 768: 12, OpenCLIP-H 1024: 16, CLIP-G 1280: 20). The activation is not in
# the shapes: OpenAI's CLIP (the 768-wide CLIP-L) uses quick-GELU, OpenCLIP's H and bigG use
# GELU. transformers' CLIPTextModel names its modules without the `text_model.` of the files
# (its class with the projection keeps it). Tokens: BOS first, EOS last (CLIP's tokenizer: the
# vocabulary's last two ids, 49406 and 49407), padded with EOS as ComfyUI's CLIP-L does; the
# pooled output is read at the EOS.


HEAD_DIM = 64


QUICK_GELU_WIDTH = 768


_T = "text_model."


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    vocab, hidden = shapes[_T + "embeddings.token_embedding.weight"]
    projection = shapes.get("text_projection.weight")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shapes[_T + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": count_blocks(shapes, _T + "encoder.layers."),
        "num_attention_heads": max(1, hidden // HEAD_DIM),
        "max_position_embeddings": shapes[_T + "embeddings.position_embedding.weight"][0],
        "hidden_act": "quick_gelu" if hidden == QUICK_GELU_WIDTH else "gelu",
        "projection_dim": projection[0] if projection else None,
        "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1,
    }


def model_class():
    def make(**cfg):
        if cfg["projection_dim"] is None:
            return build("CLIPTextModel", "CLIPTextConfig", cfg)
        return build("CLIPTextModelWithProjection", "CLIPTextConfig", cfg)
    return make


def convert(state: dict, cfg: Mapping) -> dict:
    """transformers' CLIPTextModel has no `text_model.` level (the class with the projection has)."""
    return dict(state) if cfg["projection_dim"] else renamed(state, {_T: ""})


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    specials = Specials(cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"])
    return token_batch(plan, cfg["vocab_size"] - 2, cfg["max_position_embeddings"], specials)


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    a = (_T if cfg["projection_dim"] else "") + "encoder.layers.{}.self_attn."
    return {a.format(i) + "out_proj": [[a.format(i) + "v_proj"]] for i in range(cfg["num_hidden_layers"])}


FAMILY = Family(
    "clip", "text",
    DetectionRule(("text_model.encoder.layers.0.self_attn.q_proj.weight",), "ours (CLIP-L/G text)", "",
                  ("text_model.encoder.layers.",), name_prefixes=("text_model.encoder.layers.",)),
    layer_pattern=r"(^|\.)text_model\.encoder\.layers\.\d+\.",
    layer_names=("text_projection",),
    model=ModelCode(config, model_class, convert, inputs, value_sources))  # CLIP-G's projection of the pooled output
