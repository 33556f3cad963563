"""T5 and UMT5 encoders (transformers' names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.spec import TensorSpec, linear as _linear
from fp8stream.families.text_models import build, first
from fp8stream.families.tokens import Specials, token_batch

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

# Real-size layer inventories, for scripts/bench.py --arch, of the text encoders ComfyUI ships as
# FP8 files (names and shapes as its
# `t5xxl_fp8_e4m3fn_scaled` / `umt5_xxl_fp8_e4m3fn_scaled` files hold them): every attention and
# FFN linear FP8, the embedding table, relative-attention tables and norms BF16. `blocks` scales
# depth; width and vocabulary are always full (the vocabulary is what the forward pass must not
# load whole: UMT5-XXL's is 4.2 GB as float32).


def _t5(vocab: int, blocks: int, every_block_bias: bool) -> list[TensorSpec]:
    d, ff, heads = 4096, 10240, 64
    specs = [TensorSpec("shared.weight", (vocab, d), False)]
    for i in range(blocks):
        a, f = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        for x in "qkvo":
            specs += _linear(f"{a}SelfAttention.{x}", d, d, True, bias=False)
        if i == 0 or every_block_bias:
            specs.append(TensorSpec(f"{a}SelfAttention.relative_attention_bias.weight", (32, heads), False))
        specs.append(TensorSpec(f"{a}layer_norm.weight", (d,), False))
        specs += _linear(f"{f}DenseReluDense.wi_0", ff, d, True, bias=False)
        specs += _linear(f"{f}DenseReluDense.wi_1", ff, d, True, bias=False)
        specs += _linear(f"{f}DenseReluDense.wo", d, ff, True, bias=False)
        specs.append(TensorSpec(f"{f}layer_norm.weight", (d,), False))
    return specs + [TensorSpec("encoder.final_layer_norm.weight", (d,), False)]


def t5_xxl(blocks: int | None = None) -> list[TensorSpec]:
    """T5 v1.1 XXL encoder (Flux, SD3): d 4096, FFN 10240 gated, 64 heads, 24 blocks, vocab 32128."""
    return _t5(32128, 24 if blocks is None else blocks, every_block_bias=False)


def umt5_xxl(blocks: int | None = None) -> list[TensorSpec]:
    """UMT5-XXL encoder (Wan): T5-XXL's widths, a relative table per block, vocab 256384."""
    return _t5(256384, 24 if blocks is None else blocks, every_block_bias=True)


# The forward pass's model code (`--method forward`):
# T5 and UMT5 encoders (ComfyUI's t5xxl / umt5_xxl files, transformers' names: shared,
# encoder.block.N.layer.0.SelfAttention.q, encoder.block.N.layer.1.DenseReluDense.wi_0, ...).
#
# UMT5 keeps a relative-attention table in every block, T5 only in block 0: the file says which.
# Sizes from shapes (heads: the relative table's width); gated FFN (wi_0/wi_1: T5 v1.1, UMT5)
# runs gelu-tanh, the original T5's single wi ReLU. Tokens: no BOS, EOS (1) last, pad (0) after,
# as the sentencepiece tokenizer of both writes them. `encoder.embed_tokens` is tied to `shared`.


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


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    (
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
    ),
    ("encoder.block.{}.layer.0.SelfAttention.k", "encoder.block.{}.layer.0.SelfAttention.k"),
    ("encoder.block.{}.layer.0.SelfAttention.o", "encoder.block.{}.layer.0.SelfAttention.o"),
    ("encoder.block.{}.layer.0.SelfAttention.q", "encoder.block.{}.layer.0.SelfAttention.q"),
    (
        "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias",
        "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias",
    ),
    ("encoder.block.{}.layer.0.SelfAttention.v", "encoder.block.{}.layer.0.SelfAttention.v"),
    ("encoder.block.{}.layer.1.DenseReluDense.wi_0", "encoder.block.{}.layer.1.DenseReluDense.wi_0"),
    ("encoder.block.{}.layer.1.DenseReluDense.wi_1", "encoder.block.{}.layer.1.DenseReluDense.wi_1"),
    ("encoder.block.{}.layer.1.DenseReluDense.wo", "encoder.block.{}.layer.1.DenseReluDense.wo"),
    ("encoder.embed_tokens", "shared"),
    ("shared", "shared"),
)
# end of derived renames


FAMILY = Family(
    "t5", "text",
    DetectionRule(("encoder.block.0.layer.0.SelfAttention.q.weight",), "ours (T5, UMT5)", "shared.weight",
                  ("encoder.block.",), name_prefixes=("encoder.block.",)),
    layer_pattern=r"(^|\.)encoder\.block\.\d+\.layer\.\d+\.",  # T5 / UMT5
    shared_inputs=(SharedInput(r"(^|.*\.)EncDecAttention$", ("k", "v")),  # the decoder's cross-attention
                   SharedInput(".*", ("wi_0", "wi_1"))),  # gated FFN
    cross_attention=("EncDecAttention",),
    inventories=(("t5xxl", t5_xxl), ("umt5xxl", umt5_xxl)),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
