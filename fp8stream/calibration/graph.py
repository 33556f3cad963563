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

from dataclasses import dataclass, field

from fp8stream.calibration.families import bert, flux, sd3, wan
from fp8stream.calibration.sources import (  # noqa: F401  (the source types are part of the graph's API)
    Act,
    AdaLN,
    Concat,
    External,
    Norm,
    Sinusoid,
    Source,
    Vec,
)
from fp8stream.families.detect import detect_family
from fp8stream.names.prefixes import common_model_prefix

FAMILIES = {"flux": flux, "sd3": sd3, "wan": wan, "bert": bert}  # a module each in calibration/families/


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


def build_graph(layer_names: list[str], tensor_names: set[str]) -> Graph:
    """The source of every layer (keys in the file's own spelling)."""
    pre = common_model_prefix(layer_names)
    short = {n[len(pre):] for n in layer_names}
    short_tensors = {t[len(pre):] for t in tensor_names if t.startswith(pre)}
    has = short | {t.rsplit(".", 1)[0] for t in short_tensors}
    family = detect_family(short | short_tensors) or "generic"
    g = Graph(family)
    module = FAMILIES.get(family)
    for n in layer_names:
        src = module.sources(n[len(pre):], has) if module else None
        g.sources[n] = _prefixed(src, pre) if src is not None else External("unrecognised layer (generic assumption)")
    for kind, a, b in module.VEC_TERMS if module else []:
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
