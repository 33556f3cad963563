"""A command-line option, declared beside the setting it fills (a method's, the rewrite's, the
batch's): its flags, default, accepted values, help and the --help section it is listed under.

Plain data, no click: the methods stay free of the CLI, and commands/flags.py makes the click
options. A settings dataclass declares a field as `x: int = flag(4, "--x", ...)`; the field's
default is the Python API's, `cli_default` the command line's where the two differ."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

# The --help sections, in the order they are listed.
COMMON = "Common options"
OUTPUT = "Output format"
LAYERS = "Layers"
FORWARD = "--method forward (and auto)"
SIMULATE = "--method simulate (and auto's fallback)"
STATS = "--method stats"
HEURISTIC = "--method heuristic"
RULE = "Scale rule (simulate, stats)"
BATCH = "Batches, pipes and storage"
CLUSTER = "Ray cluster"
PASS = "The forward pass (calibrate's default inputs)"  # check's section for the pass's options
SECTIONS = (COMMON, OUTPUT, LAYERS, FORWARD, PASS, SIMULATE, STATS, HEURISTIC, RULE, BATCH, CLUSTER)
VALUE_TYPES = ("str", "int", "float", "bool", "file", "dir")  # file/dir: a path that must not be the other


@dataclass(frozen=True)
class Flag:
    """One option. `decls`: its spellings ("--force", "-f"), or "--x/--no-x" for an on/off pair;
    a "bool" without a pair is a flag that is off unless given. The command's parameter is named
    after the first long spelling unless `dest` says otherwise."""

    decls: tuple[str, ...]
    section: str
    help: str
    default: Any = None
    type: str = "str"
    choices: tuple[str, ...] = ()
    range: tuple[float | None, float | None] | None = None  # inclusive bounds, None: open-ended
    min_open: bool = False  # the lower bound itself is refused
    dest: str | None = None
    multiple: bool = False
    metavar: str | None = None
    # (choice, one sentence on it): said after `help` for each choice the command accepts (help_for)
    choice_help: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.section not in SECTIONS or self.type not in VALUE_TYPES:
            raise ValueError(f"{self.decls}: section {self.section!r} or type {self.type!r} is not declared")

    def help_for(self, choices: Sequence[str] | None = None) -> str:
        """The help as a command shows it: `help`, then the sentence of each choice it accepts
        (`choices`: a command's narrower set; None: every choice)."""
        said = [f"{c}: {text}" for c, text in self.choice_help if choices is None or c in choices]
        return f"{self.help} {'; '.join(said)}." if said else self.help

    @property
    def name(self) -> str:
        """The parameter's name: `dest`, else the first long spelling as an identifier."""
        long = next(d for d in self.decls if d.startswith("--"))
        return self.dest or long.split("/")[0][2:].replace("-", "_")


def flag(default: Any, *decls: str, section: str, help: str, cli_default: Any = dataclasses.MISSING,
         **spec: Any) -> Any:
    """A dataclass field with `default` whose option is `Flag(decls, ...)` (in the field's metadata)."""
    shown = default if cli_default is dataclasses.MISSING else cli_default
    declared = Flag(decls, section, help, shown, **spec)
    return dataclasses.field(default=default, metadata={"flag": declared})


def flags_of(cls: type) -> tuple[Flag, ...]:
    """The options a settings dataclass declares, in field order. Each is named as its field (the
    command's parameter fills it: values_of)."""
    declared = []
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            if f.metadata["flag"].name != f.name:
                raise ValueError(f"{cls.__name__}.{f.name}: its flag {f.metadata['flag'].decls[0]} names another")
            declared.append(f.metadata["flag"])
    return tuple(declared)


def values_of(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `cls` that the command line gave (its declared fields in `params`)."""
    names = {f.name for f in dataclasses.fields(cls) if "flag" in f.metadata}
    return {k: v for k, v in params.items() if k in names}
