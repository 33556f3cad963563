"""Click options made from the declared `Flag`s (fp8stream/options.py), and a command whose --help
lists them in one section per `Flag.section`, in the order of options.SECTIONS."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import click

from fp8stream.options import BATCH, COMMON, SECTIONS, Flag

# Options of several commands that fill no settings dataclass (the commands read them themselves).
REPORT = Flag(("--report",), COMMON, "Append the report to FILE instead of printing it.", type="file",
              dest="report_file")
STORAGE_OPTIONS = Flag(("--storage-options",), BATCH, "JSON object for fsspec when an input or output is a URL "
                       "(s3://...): endpoint_url, profile, anon... (docs/remote.md).", dest="storage_json")


class FlagOption(click.Option):
    """A click option made from a Flag, which it keeps (`.flag`) for the sectioned --help."""

    def __init__(self, *args: Any, flag: Flag, **kwargs: Any) -> None:
        self.flag = flag
        super().__init__(*args, **kwargs)


def _click_type(declared: Flag, choices: Sequence[str] | None) -> click.ParamType | type | None:
    if choices or declared.choices:
        return click.Choice(list(choices or declared.choices))
    if declared.type in ("file", "dir"):
        return click.Path(dir_okay=declared.type == "dir", file_okay=declared.type == "file")
    if declared.range is not None:
        low, high = declared.range
        ranged = click.IntRange if declared.type == "int" else click.FloatRange
        return ranged(low, high, min_open=declared.min_open)
    return {"int": int, "float": float, "str": None, "bool": None}[declared.type]


def option(declared: Flag, choices: Sequence[str] | None = None) -> Callable[[Callable], Callable]:
    """The click option for `declared`; `choices` narrows its values, and their help, for one command."""
    on_off = declared.type == "bool" and "/" in declared.decls[0]
    is_flag = declared.type == "bool" and not on_off
    kwargs: dict[str, Any] = {"help": declared.help_for(choices), "multiple": declared.multiple,
                              "metavar": declared.metavar,
                              "show_default": declared.default not in (None, ()) and not is_flag}
    if is_flag:
        kwargs["is_flag"] = True
    else:
        kwargs.update(default=declared.default, type=_click_type(declared, choices))
    return click.option(*declared.decls, declared.name, cls=FlagOption, flag=declared, **kwargs)


def options(flags: Iterable[Flag], narrowed: Mapping[str, Sequence[str]] | None = None
            ) -> Callable[[Callable], Callable]:
    """Every flag's option, listed in the order given; `narrowed`: flag name -> the values this
    command accepts of it."""
    def decorate(fn: Callable) -> Callable:
        for declared in reversed(list(flags)):
            fn = option(declared, (narrowed or {}).get(declared.name))(fn)
        return fn
    return decorate


def ordered(flags: Iterable[Flag], first: Sequence[str]) -> tuple[Flag, ...]:
    """The flags named in `first` (by parameter name) in that order, then the others in theirs."""
    by_name = {f.name: f for f in flags}
    return (*(by_name[name] for name in first), *(f for name, f in by_name.items() if name not in first))


class SectionedCommand(click.Command):
    """--help with one section per declared Flag.section (options.SECTIONS order); within a
    section, the command's order. Options not made from a Flag (--help) end the first section;
    arguments are not listed (the usage line names them)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {section: [] for section in SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                rows[param.flag.section if isinstance(param, FlagOption) else COMMON].append(record)
        for section, records in rows.items():
            if records:
                with formatter.section(section):
                    formatter.write_dl(records)
