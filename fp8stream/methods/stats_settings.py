"""stats' settings (stats/: stats_method.py, stats_file.py). Imports no torch: --help reads it."""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.options import STATS, flag

STATS_MARGIN = 2.0  # stats with --rule max: recorded max x this, capped by the bound (scales/margin.py)


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    stats: str | None = flag(None, "--stats", section=STATS, type="file",
                             help="Stats file (fp8stream.record output, or plain per-layer scales); implies "
                                  "--method stats.")
    map: str | None = flag(None, "--map", section=STATS, type="file",
                           help="Name pairs 'stats_name checkpoint_layer' (or a JSON object), tried first.")
    # fallback: "simulate" for layers without stats; None (the CLI's "none"): an error
    fallback: str | None = flag(None, "--fallback", section=STATS, choices=("none", "simulate"), cli_default="none",
                                help="Layers without stats get simulated scales instead of an error.")
    stats_margin: float | None = flag(None, "--stats-margin", section=STATS, type="float", range=(1.0, 1e6),
                                      help="scale = MARGIN x the recorded amax, capped by the hard bound where it "
                                           "is a proof [default: 2 with --rule max, 1 with percentile/mse].")
