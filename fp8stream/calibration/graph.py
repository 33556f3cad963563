"""Who feeds each FP8 linear: producer/consumer naming for the known model families.

The weight-aware simulation (`simulate.py`) needs, for every linear, a description of where its
input comes from. This module reads only names and shapes (the header), so it is decided before
any value streams past. Families (ComfyUI / original key names):

Flux (BFL):  double_blocks.N.{img,txt}_mod.lin ............ SiLU(vec)
             double_blocks.N.{img,txt}_attn.qkv, _mlp.0 .... LN(h)·(1+scale)+shift, chunks of *_mod.lin
                                                             (shift, scale, gate) x2: attn 0/1, mlp 3/4
             double_blocks.N.{img,txt}_attn.proj ........... attention mix of the v rows of *_attn.qkv
             double_blocks.N.{img,txt}_mlp.2 ............... GELU(*_mlp.0)
             single_blocks.N.modulation.lin ................ SiLU(vec)
             single_blocks.N.linear1 ....................... LN(h)·(1+scale)+shift, chunks 0/1 of modulation.lin
             single_blocks.N.linear2 ....................... cat(attention mix of v rows [2d,3d) of linear1,
                                                                 GELU(mlp rows [3d, out) of linear1))
             final_layer.adaLN_modulation.1 ................ SiLU(vec)
             final_layer.linear ............................ LN(h)·(1+scale)+shift, chunks (0 shift, 1 scale)
             time_in / guidance_in .in_layer ............... sinusoidal embedding, |x| <= 1
             time_in / guidance_in / vector_in .out_layer .. SiLU(in_layer)
             vector_in.in_layer, img_in, txt_in ............ model inputs (pooled text, latents, T5 states)
             vec = time_in(t) + guidance_in(g) + vector_in(pooled)
SD3/MMDiT:   joint_blocks.N.{x,context}_block.adaLN_modulation.1  SiLU(vec); chunks (shift, scale, gate) x2
             ..._block.attn.qkv, mlp.fc1 ................... AdaLN of chunks 0/1, 3/4
             ..._block.attn.proj ........................... attention mix of v rows of attn.qkv
             ..._block.mlp.fc2 ............................. GELU(mlp.fc1)
             t_embedder.mlp.0 / .2, y_embedder.mlp.0 / .2 .. sinusoid / SiLU / pooled text
             vec = t_embedder(t) + y_embedder(pooled); context_embedder: T5 states
Wan:         time_embedding.0 / .2, time_projection.1 ..... sinusoid / SiLU / SiLU(e), e0 = time_projection(e)
             blocks.N.self_attn.q/k/v, ffn.0 .............. LN(x)·(1+scale)+shift, chunks 0/1, 3/4 of e0
                                                             plus the block's own bias blocks.N.modulation
             blocks.N.self_attn.o, cross_attn.o ........... attention mix of v (self_attn.v / cross_attn.v)
             blocks.N.cross_attn.q ........................ affine LayerNorm blocks.N.norm3
             blocks.N.cross_attn.k/v ...................... text states: text_embedding.2 output
             blocks.N.ffn.2 ................................ GELU(ffn.0)
             text_embedding.0 / .2, head.head ............. T5 states / GELU(text_embedding.0) / AdaLN (head.modulation)
BERT/T5:     encoder.layer.N.attention.self.query/key/value  affine LayerNorm (previous layer's
                                                             output.LayerNorm, or embeddings.LayerNorm)
             encoder.layer.N.attention.output.dense ....... attention mix of v (attention.self.value)
             encoder.layer.N.intermediate.dense ........... affine LayerNorm attention.output.LayerNorm
             encoder.layer.N.output.dense ................. GELU(intermediate.dense)
Anything else is `External` with a generic assumption, reported as such per layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

from fp8stream.formats.architecture import detect_family
from fp8stream.formats.prefixes import common_model_prefix

# --------------------------------------------------------------------------------------------
# Sources: what a linear's input is made of
# --------------------------------------------------------------------------------------------


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


@dataclass
class Graph:
    family: str
    sources: dict[str, Source] = field(default_factory=dict)
    # Vec inputs: (held embedder MLP chains): list of (kind, in_layer, out_layer)
    # kind: "time" (sinusoid of t·1000), "guidance" (sinusoid of g·1000), "pooled" (external)
    vec_terms: list[tuple[str, str, str]] = field(default_factory=list)

    def held_layers(self) -> set[str]:
        """Layers the simulation keeps whole (small embedder MLPs)."""
        return {n for _, a, b in self.vec_terms for n in (a, b)}


_N = r"(\d+)"


def _flux(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"double_blocks\.(\d+)\.(img|txt)_(mod\.lin|attn\.qkv|attn\.proj|mlp\.0|mlp\.2)", name)
    if m:
        b, s, what = m.groups()
        p = f"double_blocks.{b}.{s}_"
        if what == "mod.lin":
            return Vec("flux")
        if what == "attn.qkv":
            return AdaLN(p + "mod.lin", 0, 1, 6)
        if what == "mlp.0":
            return AdaLN(p + "mod.lin", 3, 4, 6)
        if what == "attn.proj":
            return Act("attn", p + "attn.qkv", "qkv_v")
        return Act("gelu", p + "mlp.0")
    m = re.fullmatch(r"single_blocks\.(\d+)\.(modulation\.lin|linear1|linear2)", name)
    if m:
        b, what = m.groups()
        p = f"single_blocks.{b}."
        if what == "modulation.lin":
            return Vec("flux")
        if what == "linear1":
            return AdaLN(p + "modulation.lin", 0, 1, 3)
        return Concat((Act("attn", p + "linear1", "qkv_v"), Act("gelu", p + "linear1", "mlp")))
    table = {
        "final_layer.adaLN_modulation.1": Vec("flux"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "time_in.in_layer": Sinusoid(),
        "guidance_in.in_layer": Sinusoid(),
        "time_in.out_layer": Act("silu", "time_in.in_layer"),
        "guidance_in.out_layer": Act("silu", "guidance_in.in_layer"),
        "vector_in.out_layer": Act("silu", "vector_in.in_layer"),
        "vector_in.in_layer": External("pooled text embedding"),
        "img_in": External("image latents"),
        "txt_in": External("text-encoder states"),
    }
    return table.get(name)


def _sd3(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"joint_blocks\.(\d+)\.(x_block|context_block)\.(adaLN_modulation\.1|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)", name)
    if m:
        b, blk, what = m.groups()
        p = f"joint_blocks.{b}.{blk}."
        if what == "adaLN_modulation.1":
            return Vec("sd3")
        # a pre-only context block has 2 chunks (shift, scale); the others 6
        chunks = 6 if (p + "mlp.fc1") in has or (p + "attn.proj") in has else 2
        if what == "attn.qkv":
            return AdaLN(p + "adaLN_modulation.1", 0, 1, chunks)
        if what == "mlp.fc1":
            return AdaLN(p + "adaLN_modulation.1", 3, 4, chunks)
        if what == "attn.proj":
            return Act("attn", p + "attn.qkv", "qkv_v")
        return Act("gelu", p + "mlp.fc1")
    table = {
        "final_layer.adaLN_modulation.1": Vec("sd3"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "t_embedder.mlp.0": Sinusoid(),
        "t_embedder.mlp.2": Act("silu", "t_embedder.mlp.0"),
        "y_embedder.mlp.0": External("pooled text embedding"),
        "y_embedder.mlp.2": Act("silu", "y_embedder.mlp.0"),
        "context_embedder": External("text-encoder states"),
    }
    return table.get(name)


def _wan(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(self_attn|cross_attn)\.(q|k|v|o)", name)
    if m:
        b, kind, what = m.groups()
        p = f"blocks.{b}."
        if what == "o":
            return Act("attn", f"{p}{kind}.v")
        if kind == "self_attn":
            return AdaLN("time_projection.1", 0, 1, 6, extra_bias=p + "modulation")
        if what == "q":
            return Norm(p + "norm3.weight", p + "norm3.bias")
        return Act("id", "text_embedding.2")
    m = re.fullmatch(r"blocks\.(\d+)\.ffn\.(0|2)", name)
    if m:
        b, what = m.groups()
        if what == "0":
            return AdaLN("time_projection.1", 3, 4, 6, extra_bias=f"blocks.{b}.modulation")
        return Act("gelu", f"blocks.{b}.ffn.0")
    table = {
        "time_embedding.0": Sinusoid(),
        "time_embedding.2": Act("silu", "time_embedding.0"),
        "time_projection.1": Vec("wan"),
        "text_embedding.0": External("text-encoder states"),
        "text_embedding.2": Act("gelu", "text_embedding.0"),
        "head.head": External("head input (AdaLN of head.modulation: not modelled)"),
    }
    return table.get(name)


def _bert(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"(.*?)encoder\.layer\.(\d+)\.(attention\.self\.(?:query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)", name)
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


_FAMILIES = {"flux": _flux, "sd3": _sd3, "wan": _wan, "bert": _bert}

_VEC_TERMS = {
    "flux": [("time", "time_in.in_layer", "time_in.out_layer"),
             ("guidance", "guidance_in.in_layer", "guidance_in.out_layer"),
             ("pooled", "vector_in.in_layer", "vector_in.out_layer")],
    "sd3": [("time", "t_embedder.mlp.0", "t_embedder.mlp.2"), ("pooled", "y_embedder.mlp.0", "y_embedder.mlp.2")],
    "wan": [("time", "time_embedding.0", "time_embedding.2")],
}


def build_graph(layer_names: list[str], tensor_names: set[str]) -> Graph:
    """The source of every layer (keys in the file's own spelling)."""
    pre = common_model_prefix(layer_names)
    short = {n[len(pre):] for n in layer_names}
    short_tensors = {t[len(pre):] for t in tensor_names if t.startswith(pre)}
    has = short | {t.rsplit(".", 1)[0] for t in short_tensors}
    family = detect_family(short) or "generic"
    g = Graph(family)
    fn = _FAMILIES.get(family)
    for n in layer_names:
        src = fn(n[len(pre):], has) if fn else None
        g.sources[n] = _prefixed(src, pre) if src is not None else External("unrecognised layer (generic assumption)")
    for kind, a, b in _VEC_TERMS.get(family, []):
        if a in has and b in has:
            g.vec_terms.append((kind, pre + a, pre + b))
    return g


def _prefixed(src: Source, pre: str) -> Source:
    if not pre:
        return src
    if isinstance(src, AdaLN):
        return AdaLN(pre + src.mod, src.shift, src.scale, src.chunks, pre + src.extra_bias if src.extra_bias else None)
    if isinstance(src, Norm):
        return Norm(pre + src.weight if src.weight else None, pre + src.bias if src.bias else None)
    if isinstance(src, Act):
        return Act(src.fn, pre + src.producer, src.rows)
    if isinstance(src, Concat):
        return Concat(tuple(_prefixed(p, pre) for p in src.parts))
    return src


def describe(src: Source) -> str:
    """One line a reviewer can check against the model code."""
    if isinstance(src, AdaLN):
        extra = f" + {src.extra_bias}" if src.extra_bias else ""
        return f"LN(h)*(1+scale)+shift, shift/scale = chunks {src.shift}/{src.scale} of {src.mod}{extra}"
    if isinstance(src, Norm):
        return f"LayerNorm {src.weight.rsplit('.', 1)[0] if src.weight else '(no affine)'}"
    if isinstance(src, Act):
        rows = "" if src.rows == "all" else f" rows {src.rows}"
        return f"{src.fn}({src.producer}{rows})"
    if isinstance(src, Concat):
        return "cat(" + ", ".join(describe(p) for p in src.parts) + ")"
    if isinstance(src, Vec):
        return "SiLU(vec), vec from the held timestep/guidance/pooled embedders"
    if isinstance(src, Sinusoid):
        return "sinusoidal timestep embedding, |x| <= 1"
    return f"external input: {src.what}"


def producers(src: Source) -> list[str]:
    """Linears whose row statistics this source needs."""
    if isinstance(src, AdaLN):
        return [src.mod]
    if isinstance(src, Act):
        return [src.producer]
    if isinstance(src, Concat):
        return [p for part in src.parts for p in producers(part)]
    return []


def tensors_needed(src: Source) -> list[str]:
    """Non-linear tensors (LayerNorm affine, extra modulation bias) this source reads."""
    if isinstance(src, AdaLN):
        return [src.extra_bias] if src.extra_bias else []
    if isinstance(src, Norm):
        return [t for t in (src.weight, src.bias) if t]
    if isinstance(src, Concat):
        return [t for part in src.parts for t in tensors_needed(part)]
    return []
