"""simulate's settings (simulate/: simulate_method.py, note.py); forward and auto fall back to simulate with them.
Imports no torch: --help reads it."""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.options import SIMULATE, flag

SIM_MODES = ("bound", "hybrid", "note")


@dataclass(frozen=True, kw_only=True)
class SimulateSettings:
    sim_mode: str = flag("bound", "--sim-mode", section=SIMULATE, choices=SIM_MODES,
                         help="bound = hard bound from the producers' weights; hybrid = --margin x Gaussian "
                              "estimate, capped by the bound; note = the research note's approach 2 (comparison only).")
    margin: float = flag(4.0, "--margin", section=SIMULATE, type="float", range=(1.0, 1e6),
                         help="--sim-mode hybrid: multiple of the Gaussian estimate.")
    samples: int = flag(64, "--samples", section=SIMULATE, type="int", range=(1, 65536),
                        help="Synthetic input rows per layer.")
