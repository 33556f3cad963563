"""What a linear's input is made of: the source types a family's producer graph returns (its
`graph`, families/<family>.py) and the bound's graph evaluation (methods/simulate/graph.py) reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class AdaLN:
    """LN(h)·(1 + scale) + shift; shift/scale are chunks of a modulation linear's output
    (`chunks` equal parts), optionally plus a per-block bias tensor of shape [.., chunks, d]."""

    mod: str
    shift: int
    scale: int
    chunks: int
    extra_bias: str | None = None


@dataclass(frozen=True)
class Norm:
    """An affine LayerNorm's output n·γ + β (weight/bias tensor names; None: no affine)."""

    weight: str | None
    bias: str | None


@dataclass(frozen=True)
class Act:
    """fn(rows of a producer linear's output): fn in gelu, silu, id, attn (attention mix: |mix| ≤ max|v|)."""

    fn: str
    producer: str
    rows: str = "all"  # "all", "qkv_v" ([2d, 3d), d = producer's in_features), "mlp" ([3d, out))


@dataclass(frozen=True)
class Concat:
    parts: tuple


@dataclass(frozen=True)
class Vec:
    """SiLU(vec): the conditioning vector of a DiT's modulation linears."""

    family: str


@dataclass(frozen=True)
class Sinusoid:
    """A sinusoidal timestep embedding: every element in [-1, 1]."""


@dataclass(frozen=True)
class External:
    """A model input (latents, text-encoder states, pooled text) or an unrecognised layer."""

    what: str


Source = Union[AdaLN, Norm, Act, Concat, Vec, Sinusoid, External]


def dit_stream(family: str, p: str, what: str, names: tuple[str, str, str], chunks: int) -> "Source":
    """One stream of a DiT block (Flux double block, SD3 joint block), `names` = (modulation,
    qkv, MLP-in) after the prefix p: the modulation reads SiLU(vec); qkv and MLP-in read the AdaLN
    of modulation chunks (shift, scale) 0/1 and 3/4; the attention projection reads the
    attention mix of qkv's v rows; MLP-out reads GELU(MLP-in)."""
    mod, qkv, mlp_in = names
    if what == mod:
        return Vec(family)
    if what == qkv:
        return AdaLN(p + mod, 0, 1, chunks)
    if what == mlp_in:
        return AdaLN(p + mod, 3, 4, chunks)
    if what.endswith("proj"):
        return Act("attn", p + qkv, "qkv_v")
    return Act("gelu", p + mlp_in)


@dataclass(frozen=True)
class ProducerGraph:
    """A family's producer graph, from names alone: `sources(bare layer name, bare names the file
    holds)` is where that layer's input comes from (None: a layer the graph does not know);
    `vec_terms` are the small embedder MLPs held whole that make the conditioning vector, as
    (kind, in_layer, out_layer), kind "time" (sinusoid of t·1000), "guidance" or "pooled"."""

    sources: Callable[[str, "set[str]"], "Source | None"]
    vec_terms: tuple[tuple[str, str, str], ...] = ()
