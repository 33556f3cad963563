"""Every command's flags stay what users type (issue 23): names, defaults, types, choices and ranges
equal a snapshot taken before the options moved to their methods' declarations, zoo's two
defaults aside (it defaults as calibrate does); the options calibrate and zoo share come from one
declaration; and `calibrate --help` shows the common options first.

Regenerate the snapshot only for a deliberate change: `python tests/test_flags.py --write`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp8stream.cli import main  # noqa: E402
from fp8stream.commands.flags import FlagOption  # noqa: E402
from fp8stream.methods.registry import METHODS  # noqa: E402
from fp8stream.options import CLUSTER, FORWARD, PASS, SECTIONS  # noqa: E402

SNAPSHOT = Path(__file__).parent / "data" / "flags.json"
# The deliberate changes since the snapshot: zoo defaults as calibrate does.
CHANGED = {("zoo", "--method", "default"): ("simulate", "auto"), ("zoo", "--device", "default"): ("cpu", "auto")}


def _type(param: click.Parameter) -> dict[str, object]:
    t = param.type
    out: dict[str, object] = {"name": t.name}
    if isinstance(t, click.Choice):
        out["choices"] = sorted(t.choices)  # the set a user may give; their order is the help's
    if isinstance(t, (click.IntRange, click.FloatRange)):
        out.update(min=t.min, max=t.max, min_open=t.min_open, max_open=t.max_open)
    if isinstance(t, click.Path):
        out.update(file_okay=t.file_okay, dir_okay=t.dir_okay, allow_dash=t.allow_dash)
    return out


def _param(param: click.Parameter, ctx: click.Context) -> dict[str, object]:
    # the value the command receives when the option is not given
    default = None if isinstance(param, click.Argument) else param.process_value(ctx, param.get_default(ctx))
    if type(default).__name__ == "Sentinel":  # click >= 8.2's "not given": the command receives None
        default = None
    return {"opts": list(param.opts), "secondary": list(param.secondary_opts), "kind": param.param_type_name,
            "default": list(default) if isinstance(default, tuple) else default, "type": _type(param),
            "multiple": param.multiple, "nargs": param.nargs, "required": param.required,
            "is_flag": bool(getattr(param, "is_flag", False))}


def snapshot() -> dict[str, dict[str, dict[str, object]]]:
    """command -> its first option string -> what a user sees of it."""
    return {name: {p.opts[0]: _param(p, click.Context(cmd)) for p in cmd.params}
            for name, cmd in sorted(main.commands.items())}


def test_every_command_keeps_its_flags_defaults_and_choices() -> None:
    before = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    for (command, flag, key), (old, new) in CHANGED.items():
        assert before[command][flag][key] == old
        before[command][flag][key] = new
    now = json.loads(json.dumps(snapshot()))
    for command in before:
        assert now[command] == before[command], command
    assert now.keys() == before.keys()


def test_calibrate_and_zoo_take_every_shared_option_from_one_declaration() -> None:
    calibrate, zoo = ({o: p for p in main.commands[c].params for o in p.opts} for c in ("calibrate", "zoo"))
    shared = calibrate.keys() & zoo.keys()
    assert {"--method", "--device", "--seed", "--force", "--preset", "--report", "--storage-options"} <= shared
    for name in shared:
        assert isinstance(calibrate[name], FlagOption) and calibrate[name].flag is zoo[name].flag, name


def test_each_command_describes_only_the_methods_it_accepts() -> None:
    """zoo narrows the shared --method to the methods that need no side file: its help says only those."""
    accepted = {}
    for command in ("calibrate", "zoo"):
        method = next(p for p in main.commands[command].params if "--method" in p.opts)
        help_text = method.get_help_record(click.Context(main.commands[command]))[1]
        accepted[command] = set(method.type.choices)
        assert {name for name in METHODS if f"{name}: " in help_text} == accepted[command], (command, help_text)
    assert accepted["calibrate"] - accepted["zoo"] == {"stats"}


def test_no_option_is_declared_twice_and_every_option_is_declared() -> None:
    declared: dict[str, object] = {}
    for name, command in main.commands.items():
        if name not in ("calibrate", "zoo"):
            continue
        for param in command.params:
            if isinstance(param, click.Argument):
                continue
            assert isinstance(param, FlagOption), f"{name} {param.opts}: a click option, not a declared Flag"
            for spelling in param.opts + param.secondary_opts:
                assert declared.setdefault(spelling, param.flag) is param.flag, f"{spelling} declared twice"


def test_calibrate_help_lists_the_common_options_first_then_one_section_each() -> None:
    result = CliRunner().invoke(main, ["calibrate", "--help"], terminal_width=80)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    first = "\n".join(lines[:45])
    for flag in ("--force", "--device", "--verify", "--json"):
        assert flag in first, flag
    headings = [line[:-1] for line in lines if line.endswith(":") and line[:-1] in SECTIONS]
    assert headings == [s for s in SECTIONS if s not in (CLUSTER, PASS)]  # every one but zoo's and check's, in order



def test_the_settings_a_method_is_registered_with_are_gathered_and_offered() -> None:
    """To add a method is one registry line naming its settings class, and its package: the
    classes the registry lists are what CalibrationSettings gathers (besides the scale rule's,
    which simulate and stats share), and each of their flags is an option of calibrate."""
    from fp8stream.methods.settings import CalibrationSettings
    from fp8stream.options import flags_of
    from fp8stream.scales.rule_settings import RuleSettings

    listed = {entry.settings for entry in METHODS.values() if entry.settings is not None}
    assert len(listed) == 4  # simulate, stats, heuristic, forward (auto has none of its own)
    assert set(CalibrationSettings.__bases__) == listed | {RuleSettings}
    calibrate = {spelling for p in main.commands["calibrate"].params for spelling in p.opts}
    for settings in listed:
        for declared in flags_of(settings):
            assert declared.decls[0].split("/")[0] in calibrate, declared.decls


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


def test_check_help_words_the_pass_options_for_check() -> None:
    """check shares calibrate's pass options but has no --method and writes no bytes: its help
    must not send the user to a method section or promise the same bytes."""
    result = CliRunner().invoke(main, ["check", "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert FORWARD + ":" not in result.output and PASS + ":" in result.output
    seed = result.output[result.output.index("--seed"):result.output.index("-h, --help")]
    assert "figures" in seed and "bytes" not in seed


def test_auto_device_is_the_cpu_for_methods_a_gpu_does_not_help(monkeypatch) -> None:
    """On a machine with a GPU, --device auto gives it to the forward pass and keeps the methods
    without one (simulate's bound, stats, the heuristic) on the CPU, whose maths keeps up with the
    disk without torch;
    --device cuda is obeyed whatever the method."""
    import torch

    from fp8stream.methods import settings

    monkeypatch.setattr(settings, "_nvidia_driver", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    auto = {m: settings.resolve_device("auto", m) for m in METHODS}
    assert auto == {"auto": "cuda", "forward": "cuda", "stats": "cpu", "simulate": "cpu", "heuristic": "cpu"}
    assert {settings.resolve_device("cuda", m) for m in METHODS} == {"cuda"}
    assert {settings.resolve_device("cpu", m) for m in METHODS} == {"cpu"}
