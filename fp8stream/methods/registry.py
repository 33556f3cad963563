"""Method names -> the module that implements them and one line of help.

No method module is imported until one is chosen, so `fp8stream --help` lists them without
torch. A method module exposes `create(settings) -> CalibrationMethod` (interface.py) and never
imports this registry. To add a method: one line here, its module, and its settings (with their
flags) in a module beside it that CalibrationSettings gathers (methods/settings.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fp8stream.methods.interface import CalibrationMethod
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.options import COMMON, Flag


@dataclass(frozen=True)
class MethodEntry:
    module: str
    help: str
    side_file: bool = False  # reads a file given beside the checkpoint (--stats FILE)


METHODS: dict[str, MethodEntry] = {
    "auto": MethodEntry("fp8stream.methods.auto.auto_method",
                        "forward where it can run (a file, diffusers, a known family), else simulate"),
    "simulate": MethodEntry("fp8stream.methods.simulate.simulate_method",
                            "the weight-aware model of each layer's input (no data)"),
    "stats": MethodEntry("fp8stream.methods.stats.stats_method", "real-data statistics from --stats FILE",
                         side_file=True),
    "heuristic": MethodEntry("fp8stream.methods.heuristic.heuristic_method", "weight_scale x --factor"),
    "forward": MethodEntry("fp8stream.methods.forward.forward_method",
                           "a synthetic forward pass through the checkpoint's own weights (needs diffusers)"),
}


def method_names() -> list[str]:
    return sorted(METHODS)


def methods_without_side_file() -> list[str]:
    """The methods that need nothing beside the checkpoint (those zoo offers)."""
    return [name for name in method_names() if not METHODS[name].side_file]


METHOD = Flag(("--method",), COMMON, "Where activation ranges come from.", default=CalibrationSettings.method,
              choices=tuple(method_names()), choice_help=tuple((name, entry.help) for name, entry in METHODS.items()))


def create(settings: CalibrationSettings) -> CalibrationMethod:
    """The chosen method, its module imported now."""
    module = importlib.import_module(METHODS[settings.method].module)
    return module.create(settings)
