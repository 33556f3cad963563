"""T5 and UMT5 encoders (ComfyUI's t5xxl / umt5_xxl files, transformers' names: shared,
encoder.block.N.layer.0.SelfAttention.q, encoder.block.N.layer.1.DenseReluDense.wi_0, ...).

UMT5 keeps a relative-attention table in every block, T5 only in block 0: the file says which.
Sizes from shapes (heads: the relative table's width); gated FFN (wi_0/wi_1: T5 v1.1, UMT5)
runs gelu-tanh, the original T5's single wi ReLU. Tokens: no BOS, EOS (1) last, pad (0) after,
as the sentencepiece tokenizer of both writes them. `encoder.embed_tokens` is tied to `shared`.
"""

from __future__ import annotations

from typing import Mapping

from fp8stream.forward.families import count_blocks
from fp8stream.forward.families.text_models import build, first
from fp8stream.forward.inputs import SamplePlan
from fp8stream.forward.tokens import Specials, token_batch

NAME = "t5"
EOS, PAD = 1, 0
POSITIONS = 512  # T5 has relative positions only; ComfyUI pads T5-XXL up to 512 tokens at most
_BLOCK = "encoder.block.{}.layer."



def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    vocab, d_model = first(shapes, "shared.weight", "encoder.embed_tokens.weight")
    buckets, heads = shapes[_BLOCK.format(0) + "0.SelfAttention.relative_attention_bias.weight"]
    inner = shapes[_BLOCK.format(0) + "0.SelfAttention.q.weight"][0]
    gated = _BLOCK.format(0) + "1.DenseReluDense.wi_0.weight" in shapes
    ff = shapes[_BLOCK.format(0) + ("1.DenseReluDense.wi_0.weight" if gated else "1.DenseReluDense.wi.weight")][0]
    return {
        "umt5": _BLOCK.format(1) + "0.SelfAttention.relative_attention_bias.weight" in shapes,
        "vocab_size": vocab, "d_model": d_model, "d_kv": inner // heads, "d_ff": ff, "num_heads": heads,
        "num_layers": count_blocks(shapes, "encoder.block."),
        "relative_attention_num_buckets": buckets,
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        "dropout_rate": 0.0,
    }


def model_class():
    def make(umt5: bool, **cfg):
        return build("UMT5EncoderModel", "UMT5Config", cfg) if umt5 else build("T5EncoderModel", "T5Config", cfg)
    return make


def convert(state: dict, cfg: Mapping) -> dict:
    out = dict(state)
    table = out.get("shared.weight", out.get("encoder.embed_tokens.weight"))
    out.setdefault("shared.weight", table)  # one table, two names in transformers' model
    out.setdefault("encoder.embed_tokens.weight", table)
    return out


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    return token_batch(plan, cfg["vocab_size"], POSITIONS, Specials(None, EOS, PAD))


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    a = "encoder.block.{}.layer.0.SelfAttention."
    return {a.format(i) + "o": [[a.format(i) + "v"]] for i in range(cfg["num_layers"])}
