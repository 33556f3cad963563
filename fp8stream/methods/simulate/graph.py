"""Who feeds each FP8 linear: producer/consumer naming for the known model families.

The weight-aware simulation (`simulate_method.py`) needs, for every linear, a description of where its
input comes from. This module reads only names and shapes (the header), so it is decided before
any value streams past. Each family that has one declares it (`Family.graph`): its module in
families/ holds the graph and its table, one line per layer kind a reviewer can check against the
model code (e.g. `single_blocks.N.linear2 .. cat(attention mix of v rows, GELU(mlp rows) of linear1)`).
This module evaluates them: the prefix, the held embedder MLPs, the sources' descriptions.
Anything else is `External` with a generic assumption, reported as such per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fp8stream.families import by_name
from fp8stream.families.detect import detect_family
from fp8stream.families.graph_types import (  # noqa: F401  (the source types are part of the graph's API)
    Act,
    AdaLN,
    Concat,
    External,
    Norm,
    Sinusoid,
    Source,
    Vec,
)
from fp8stream.names.prefixes import common_model_prefix


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
    found = detect_family(short | short_tensors)
    g = Graph(found or "generic")
    producer = by_name(found).graph if found else None  # the family's, None where it declares none
    for n in layer_names:
        src = producer.sources(n[len(pre):], has) if producer else None
        g.sources[n] = _prefixed(src, pre) if src is not None else External("unrecognised layer (generic assumption)")
    for kind, a, b in producer.vec_terms if producer else ():
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


def reads_vec(src: Source) -> bool:
    """Whether this source's model reads the conditioning vector (its embedders' weights)."""
    if isinstance(src, Concat):
        return any(reads_vec(part) for part in src.parts)
    return isinstance(src, (Vec, AdaLN))


def tensors_needed(src: Source) -> list[str]:
    """Non-linear tensors (LayerNorm affine, extra modulation bias) this source reads."""
    if isinstance(src, AdaLN):
        return [src.extra_bias] if src.extra_bias else []
    if isinstance(src, Norm):
        return [t for t in (src.weight, src.bias) if t]
    if isinstance(src, Concat):
        return [t for part in src.parts for t in tensors_needed(part)]
    return []


def rests_on_input(graph: Graph, name: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether the hard bound of layer `name` needs an assumption about a model input (it
    reaches an External source through its producers): then it is no proof."""
    src = graph.sources.get(name)
    return src is None or _source_rests(graph, src, seen | {name})


def _source_rests(graph: Graph, src: Source, seen: frozenset[str]) -> bool:
    if isinstance(src, (External, Vec)):  # Vec: the pooled-text embedder reads a model input
        return True
    if isinstance(src, Concat):
        return any(_source_rests(graph, p, seen) for p in src.parts)
    return any(p in seen or rests_on_input(graph, p, seen) for p in producers(src))
