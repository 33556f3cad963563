"""T5 and UMT5 encoders (transformers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.spec import TensorSpec, linear as _linear

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


FAMILY = Family(
    "t5", "text",
    DetectionRule(("encoder.block.0.layer.0.SelfAttention.q.weight",), "ours (T5, UMT5)", "shared.weight",
                  ("encoder.block.",), name_prefixes=("encoder.block.",)),
    layer_pattern=r"(^|\.)encoder\.block\.\d+\.layer\.\d+\.",  # T5 / UMT5
    shared_inputs=(SharedInput(r"(^|.*\.)EncDecAttention$", ("k", "v")),  # the decoder's cross-attention
                   SharedInput(".*", ("wi_0", "wi_1"))),  # gated FFN
    cross_attention=("EncDecAttention",),
    inventories=(("t5xxl", t5_xxl), ("umt5xxl", umt5_xxl)))
