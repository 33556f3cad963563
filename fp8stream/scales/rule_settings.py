"""How samples become a scale (rules.py): the rule and its percentile, read by simulate, its note
mode and stats. Imports no torch: --help reads it."""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.options import RULE, flag

RULES = ("max", "percentile", "mse")


@dataclass(frozen=True, kw_only=True)
class RuleSettings:
    rule: str = flag("max", "--rule", section=RULE, choices=RULES,
                     help="How samples become a scale: max, percentile (--percentile) or mse search.")
    percentile: float = flag(99.99, "--percentile", section=RULE, type="float", range=(50.0, 100.0),
                             help="Percentile of |activation| for --rule percentile.")
