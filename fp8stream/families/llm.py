"""LLM text encoders (Qwen, Llama/Mistral, Gemma; transformers' names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.text_models import build, renamed
from fp8stream.families.tokens import Specials, token_batch

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


# the extra key: the layers under text_encoders.X.transformer.


# The forward pass's model code (`--method forward`):
# Decoder-style text encoders ComfyUI ships (Qwen2.5-VL's text part, Qwen3, Mistral / Llama,
# Gemma 2 / 3), transformers' names under `model.`: model.embed_tokens,
# model.layers.N.self_attn.q_proj, model.layers.N.mlp.gate_proj, model.norm (a vision tower or
# an lm_head beside them is not part of the text model: not reached, reported as such).
#
# The class from the keys: a pre-feedforward norm is Gemma (with a q/k norm Gemma 3, else
# Gemma 2), a q/k norm alone Qwen3, q/k/v biases Qwen2 (Qwen2.5-VL's text model: its 3-D rotary
# positions are equal on text tokens, so the 1-D rotary is the same), anything else Llama
# (Mistral's architecture). Head width: the q/k norm's width where there is one; else the
# family's (Gemma 2: 256; Qwen2, Llama, Mistral: 128) when the projections divide by it, else
# SMALL_HEAD_DIM (a small test model). Rotary bases and window sizes are the classes' defaults:
# they move attention patterns, not the norms that feed the projections. Tokens: uniform ids
# over the vocabulary, no special token (the first position is where these models' massive
# activations sit, whatever its token), padding masked or attended, no cache.


SMALL_HEAD_DIM = 16


POSITIONS = 4096


_L = "layers.0."


_CLASSES = {  # kind -> (model class, config class, default head width)
    "gemma3": ("Gemma3TextModel", "Gemma3TextConfig", 256),
    "gemma2": ("Gemma2Model", "Gemma2Config", 256),
    "qwen3": ("Qwen3Model", "Qwen3Config", 128),
    "qwen2": ("Qwen2Model", "Qwen2Config", 128),
    "llama": ("LlamaModel", "LlamaConfig", 128),
}


def _bare(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in shapes.items()}


def kind(shapes: Mapping[str, tuple[int, ...]]) -> str:
    qk_norm = _L + "self_attn.q_norm.weight" in shapes
    if _L + "pre_feedforward_layernorm.weight" in shapes:
        return "gemma3" if qk_norm else "gemma2"
    if qk_norm:
        return "qwen3"
    return "qwen2" if _L + "self_attn.q_proj.bias" in shapes else "llama"


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    s = _bare(shapes)
    k = kind(s)
    vocab, hidden = s["embed_tokens.weight"]
    q, k_rows = s[_L + "self_attn.q_proj.weight"][0], s[_L + "self_attn.k_proj.weight"][0]
    norm = s.get(_L + "self_attn.q_norm.weight")
    head = norm[0] if norm else _CLASSES[k][2]
    if q % head or k_rows % head:
        head = SMALL_HEAD_DIM
    cfg = {"kind": k, "vocab_size": vocab, "hidden_size": hidden, "head_dim": head,
           "intermediate_size": s[_L + "mlp.gate_proj.weight"][0],
           "num_hidden_layers": count_blocks(s, "layers."),
           "num_attention_heads": q // head, "num_key_value_heads": k_rows // head}
    if k.startswith("gemma"):
        cfg["query_pre_attn_scalar"] = head
    return cfg


def model_class():
    def make(kind: str, **cfg):
        model, config_class, _ = _CLASSES[kind]
        return build(model, config_class, cfg)
    return make


def convert(state: dict, cfg: Mapping) -> dict:
    return renamed(state, {"model.": ""})


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    return {**token_batch(plan, cfg["vocab_size"], POSITIONS, Specials(None, None, 0)), "use_cache": False}


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    a = "layers.{}.self_attn."
    return {a.format(i) + "o_proj": [[a.format(i) + "v_proj"]] for i in range(cfg["num_hidden_layers"])}


FAMILY = Family(
    "llm", "text",
    DetectionRule(("layers.0.self_attn.q_proj.weight",), "ours (Qwen, Llama/Mistral, Gemma)", "", ("layers.",),
                  ("model.layers.0.self_attn.q_proj.weight",)),
    layer_pattern=r"(^|\.)model\.layers\.\d+\.(self_attn|mlp)\.",
    model=ModelCode(config, model_class, convert, inputs, value_sources))  # Llama, Qwen, Gemma, Mistral
