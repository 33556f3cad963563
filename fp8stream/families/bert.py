"""BERT-style text encoders (transformers' names)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.graph_types import Act, Norm, ProducerGraph, Source
from fp8stream.families.text_models import build
from fp8stream.families.tokens import Specials, token_batch

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

# The producer graph of the bound (`--method simulate`): where each linear's input comes from.
# BERT/T5:     encoder.layer.N.attention.self.query/key/value  affine LayerNorm (previous layer's
#                                                              output.LayerNorm, or embeddings.LayerNorm)
#              encoder.layer.N.attention.output.dense ....... attention mix of v (attention.self.value)
#              encoder.layer.N.intermediate.dense ........... affine LayerNorm attention.output.LayerNorm
#              encoder.layer.N.output.dense ................. GELU(intermediate.dense)


def sources(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"(.*?)encoder\.layer\.(\d+)\."
                     r"(attention\.self\.(?:query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)",
                     name)
    if not m:
        return None
    pre, n, what = m.groups()
    n = int(n)
    p = f"{pre}encoder.layer.{n}."
    if what.startswith("attention.self."):
        ln = f"{pre}encoder.layer.{n - 1}.output.LayerNorm" if n > 0 else f"{pre}embeddings.LayerNorm"
        return Norm(ln + ".weight", ln + ".bias")
    if what == "attention.output.dense":
        return Act("attn", p + "attention.self.value")
    if what == "intermediate.dense":
        ln = p + "attention.output.LayerNorm"
        return Norm(ln + ".weight", ln + ".bias")
    return Act("gelu", p + "intermediate.dense")


# The forward pass's model code (`--method forward`):
# BERT-style encoders (transformers' BertModel names: embeddings.word_embeddings,
# encoder.layer.N.attention.self.query, ...; MiniLM, BERT, the CLIP-side BERTs).
#
# Heads are not in the shapes: the widths of the published BERT-style models say them (MiniLM's
# 384 has 12 heads of 32, TinyBERT's 312 12, BERT-base 768 12, BERT-large 1024 16, the small
# BERTs 128/256/512 2/4/8); any other width gets heads of 64, BERT's own head size. The q/k/v and
# FFN-up inputs are LayerNorm outputs and the attention output's estimate is the mix bound
# (methods/forward/engine.py), so a head count that is off moves only the attention pattern. Tokens: [CLS] first,
# [SEP] last, [PAD] after (BERT's uncased vocabulary: 101, 102, 0).


HEADS_BY_WIDTH = {128: 2, 256: 4, 312: 12, 384: 12, 512: 8, 768: 12, 1024: 16}


HEAD_DIM = 64


CLS, SEP, PAD = 101, 102, 0


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    vocab, hidden = shapes["embeddings.word_embeddings.weight"]
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": count_blocks(shapes, "encoder.layer."),
        "num_attention_heads": HEADS_BY_WIDTH.get(hidden, max(1, hidden // HEAD_DIM)),
        "intermediate_size": shapes["encoder.layer.0.intermediate.dense.weight"][0],
        "max_position_embeddings": shapes["embeddings.position_embeddings.weight"][0],
        "type_vocab_size": shapes["embeddings.token_type_embeddings.weight"][0],
        "add_pooling_layer": "pooler.dense.weight" in shapes,
    }


def model_class():
    def make(add_pooling_layer: bool, **cfg):
        return build("BertModel", "BertConfig", cfg, add_pooling_layer=add_pooling_layer)
    return make


def convert(state: dict, cfg: Mapping) -> dict:
    return dict(state)


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    vocab = cfg["vocab_size"]
    specials = Specials(CLS, SEP, PAD) if vocab > CLS + 1 else Specials(None, None, 0)
    return token_batch(plan, vocab, cfg["max_position_embeddings"], specials)


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    return {f"encoder.layer.{i}.attention.output.dense": [[f"encoder.layer.{i}.attention.self.value"]]
            for i in range(cfg["num_hidden_layers"])}


FAMILY = Family(
    "bert", "text", DetectionRule(("encoder.layer.0.attention.self.query.weight",), "ours", "", ("encoder.layer.",)),
    layer_pattern=r"(^|\.)encoder\.layer\.\d+\.(attention|intermediate|output)\.",
    graph=ProducerGraph(sources),
    model=ModelCode(config, model_class, convert, inputs, value_sources))
