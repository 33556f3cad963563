"""One prefix list and one family detector, used by presets, the producer graph and stats matching."""

from __future__ import annotations

import pytest

from architectures import LINEARS
from fp8stream.families.detect import detect_family
from fp8stream.formats.selection import Selection, excluded_layers
from fp8stream.methods.simulate.graph import build_graph
from fp8stream.methods.stats.stats_file import LayerStats, StatsFile, match
from fp8stream.names.prefixes import bare_name, common_model_prefix

PREFIXES = ["", "model.diffusion_model.", "diffusion_model.", "transformer.", "model."]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("arch", ["flux", "sd3", "wan"])
def test_every_user_of_the_family_agrees(arch: str, prefix: str) -> None:
    names = [prefix + n for n in LINEARS[arch]()]
    assert detect_family(names) == arch
    assert common_model_prefix(names) == prefix and all(bare_name(n) == n[len(prefix):] for n in names)
    assert build_graph(names, {n + ".weight" for n in names}).family == arch
    excluded = excluded_layers(names, names, Selection(preset="auto"))
    assert excluded and all(why.startswith(f"preset {arch}") for why in excluded.values())


def test_flux_with_single_blocks_only_is_flux_for_presets_and_graph() -> None:
    names = [n for n in LINEARS["flux"]() if not n.startswith("double_blocks.")]
    assert detect_family(names) == "flux"
    assert build_graph(names, set()).family == "flux"


def test_stats_names_lose_the_same_prefixes_as_layer_names() -> None:
    layers = ["model.diffusion_model." + n for n in LINEARS["flux"]()]
    stats = StatsFile({"transformer.transformer_blocks.0.attn.to_q": LayerStats(amax=3.0, sources=["q"])})
    m = match(stats, layers)
    assert list(m.by_layer) == ["model.diffusion_model.double_blocks.0.img_attn.qkv"]


def test_the_bound_knows_the_families_that_declare_a_producer_graph() -> None:
    """The families whose graph moved into their module (the bound's, before: a table in the simulate method)."""
    from fp8stream.families import FAMILIES

    assert {f.name for f in FAMILIES if f.graph is not None} == {"flux", "sd3", "wan", "bert"}


@pytest.mark.parametrize("key", ["flux", "sd35", "wan", "wan22-5b"])
def test_the_producer_graph_knows_every_fp8_layer_of_the_real_size_model(key: str) -> None:
    """Each FP8 linear of a real-size inventory gets a source from its family's graph, never the
    generic assumption; the held embedder MLPs are found."""
    from fp8stream.families import inventory
    from fp8stream.families.graph_types import External

    specs = inventory(key)(2)
    layers = [s.name[: -len(".weight")] for s in specs if s.fp8]
    graph = build_graph(layers + [s.name[: -len(".weight")] for s in specs if s.name.endswith(".weight")],
                        {s.name for s in specs})
    unknown = [n for n in layers if isinstance(graph.sources[n], External)]
    assert graph.family in {"flux", "sd3", "wan"} and not unknown, (graph.family, unknown[:3])
    assert graph.vec_terms
