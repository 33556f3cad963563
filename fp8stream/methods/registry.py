"""The methods: each name -> its package's module, its settings, one line of help.

To add a method: one line here, its package under methods/ (a module with `create(settings) ->
CalibrationMethod`, interface.py) and, if it has options, its settings beside the package
(`<name>_settings.py`: a frozen dataclass whose fields declare their flags, options.flag).
CalibrationSettings (settings.py) gathers every settings class listed here, and `calibrate`,
`zoo` and --help build their options from them. Which of its values the output's metadata
records is said in CalibrationSettings.describe() (the keys users read stay as they are).

Only the settings modules are imported here (torch-free), so `fp8stream --help` lists the methods
without torch; a method's module is imported once it is chosen (interface.create), and never
imports this registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.methods.forward_settings import ForwardSettings
from fp8stream.methods.heuristic_settings import HeuristicSettings
from fp8stream.methods.simulate_settings import SimulateSettings
from fp8stream.methods.stats_settings import StatsSettings
from fp8stream.options import COMMON, Flag

DEFAULT_METHOD = "auto"


@dataclass(frozen=True)
class MethodEntry:
    module: str
    help: str
    side_file: bool = False  # reads a file given beside the checkpoint (--stats FILE)
    settings: type | None = None  # its own options (a settings dataclass); None: it has none of its own
    # --device auto picks a GPU for it where there is one; False: the CPU, where its maths keeps
    # up with the disk without torch, which a GPU run would import and start CUDA for first
    gpu_helps: bool = True


METHODS: dict[str, MethodEntry] = {
    # auto's options are forward's and simulate's
    "auto": MethodEntry("fp8stream.methods.auto.auto_method",
                        "forward where it can run (a file, diffusers, a known family), else simulate"),
    # the bound: row sums in numpy at the disk's speed (the device H100, 16 cores, full-width Flux-dev:
    # 1.04-1.14x cp + sync on the CPU, 1.57x on the GPU, docs/speed.md)
    "simulate": MethodEntry("fp8stream.methods.simulate.simulate_method",
                            "the weight-aware model of each layer's input (no data)", settings=SimulateSettings,
                            gpu_helps=False),
    "stats": MethodEntry("fp8stream.methods.stats.stats_method", "real-data statistics from --stats FILE",
                         side_file=True, settings=StatsSettings, gpu_helps=False),  # its GPU work: the bound's
    "heuristic": MethodEntry("fp8stream.methods.heuristic.heuristic_method", "weight_scale x --factor",
                             settings=HeuristicSettings, gpu_helps=False),  # no maths beyond the weight scales
    "forward": MethodEntry("fp8stream.methods.forward.forward_method",
                           "a synthetic forward pass through the checkpoint's own weights (needs diffusers)",
                           settings=ForwardSettings),
}


def method_names() -> list[str]:
    return sorted(METHODS)


def methods_without_side_file() -> list[str]:
    """The methods that need nothing beside the checkpoint (those zoo offers)."""
    return [name for name in method_names() if not METHODS[name].side_file]


def method_settings() -> tuple[type, ...]:
    """Every method's own settings class, once each, in the order listed."""
    return tuple(dict.fromkeys(entry.settings for entry in METHODS.values() if entry.settings is not None))


METHOD = Flag(("--method",), COMMON, "Where activation ranges come from.", default=DEFAULT_METHOD,
              choices=tuple(method_names()), choice_help=tuple((name, entry.help) for name, entry in METHODS.items()))
