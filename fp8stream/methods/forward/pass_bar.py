"""The forward pass's progress bar: it counts the file's FP8 layers, not the model's Linears (a
fused qkv weight feeds three of them, a float Linear none)."""

from __future__ import annotations

from typing import Iterable, Mapping

from fp8stream.methods.forward.mapping import Run
from fp8stream.names.suffixes import WEIGHT


def fp8_sources(linears: Iterable[str], mapping: Mapping[str, list[Run]],
                scale_names: Mapping[str, str | None]) -> dict[str, set[str]]:
    """Each Linear's FP8 checkpoint weights (those with a weight scale entry)."""
    return {n: {r.source for r in mapping[n + WEIGHT] if r.source in scale_names} for n in linears}


def counting(sources: dict[str, set[str]], bar):
    """on_linear: the bar moves by the FP8 weights a Linear that ran was the first to finish."""
    counted: set[str] = set()

    def ran(linear: str) -> None:
        new = sources[linear] - counted
        counted.update(new)
        bar.update(len(new))
    return ran
