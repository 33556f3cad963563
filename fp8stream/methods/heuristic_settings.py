"""heuristic's one setting (heuristic/heuristic_method.py). Imports no torch: --help reads it."""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.options import HEURISTIC, flag


@dataclass(frozen=True, kw_only=True)
class HeuristicSettings:
    factor: float = flag(0.5, "--factor", section=HEURISTIC, type="float", range=(0.0, None), min_open=True,
                         help="input_scale = weight_scale x FACTOR.")
