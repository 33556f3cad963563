"""Synthetic token batches for the text encoders' forward pass (BERT, T5/UMT5, CLIP, LLM encoders).

An encoder's input is token ids, so the stand-in for real prompts is token ids: sample i of B
has n_i real tokens (geometric over [MIN_TOKENS, L], L = --forward-text-tokens capped by the
model's positions), each drawn uniformly over the whole vocabulary (the embedding's rows), framed
by the family's special tokens where its tokenizer adds them (BOS/CLS first, EOS/SEP last: the
tokens real activations peak on), then padding up to L. Even samples mask the padding out
(attention_mask 0), odd ones attend to it as real tokens (Flux and SD3 pipelines run T5 without
a mask): both ways ComfyUI runs these encoders occur. Why this stands in for real text
(docs/methods.md): every encoder starts by looking rows up in its embedding table, and each
sublayer reads a normalised residual stream (LayerNorm / RMSNorm), so a layer's input range is
set by the weights and by which rows and positions are present, not by the meaning of the
sentence; uniform ids visit rows of every kind (frequent, rare, punctuation, special), a range
of lengths visits every position and the padded tails. One CPU generator seeded by `seed`: the
same ids on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a batch is drawn: the family modules stay torch-free
    import torch

    from fp8stream.families.samples import SamplePlan

MIN_TOKENS = 4


@dataclass(frozen=True)
class Specials:
    """A tokenizer's special ids (None: the tokenizer does not add one)."""

    bos: int | None
    eos: int | None
    pad: int


def lengths(batch: int, longest: int) -> list[int]:
    """Real tokens per sample: geometric over [MIN_TOKENS, longest], longest first."""
    lo = min(MIN_TOKENS, longest)
    if batch == 1:
        return [longest]
    return [max(lo, round(math.exp(math.log(longest) + (math.log(lo) - math.log(longest)) * i / (batch - 1))))
            for i in range(batch)]


def token_batch(plan: SamplePlan, vocab: int, max_positions: int, specials: Specials) -> dict[str, torch.Tensor]:
    """{"input_ids": [B, L] int64, "attention_mask": [B, L] int64} for one batch."""
    import torch

    width = max(1, min(plan.text_tokens, max_positions))
    ids = torch.full((plan.batch, width), specials.pad, dtype=torch.int64)
    mask = torch.zeros(plan.batch, width, dtype=torch.int64)
    for i, n in enumerate(lengths(plan.batch, width)):
        ids[i, :n] = torch.randint(0, vocab, (n,), generator=plan.generator)
        if specials.bos is not None and n > 1:
            ids[i, 0] = specials.bos
        if specials.eos is not None:
            ids[i, n - 1] = specials.eos
        mask[i, : (n if i % 2 == 0 else width)] = 1
    return {"input_ids": ids, "attention_mask": mask}
