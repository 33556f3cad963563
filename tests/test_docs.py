"""The docs stay true to the tree (issue 23): the README is a newcomer's page that starts with the
two commands, every relative link resolves, and docs/usage.md's option table is the CLI's."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from conftest import REPO_ROOT
from fp8stream.commands.calibrate import calibrate

ROOT = Path(REPO_ROOT)
README = ROOT / "README.md"
USAGE = ROOT / "docs" / "usage.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _pages() -> list[Path]:
    return [README, ROOT / "ARCHITECTURE.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def _section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next `## `."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _table_flags(section: str) -> set[str]:
    """Every --flag named in the first column of the section's tables."""
    flags: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            flags |= set(FLAG.findall(line.split(" | ")[0]))
    return flags


def _declared_flags(command: click.Command) -> set[str]:
    flags = set()
    for param in command.params:
        if isinstance(param, click.Option):
            flags |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return flags


def test_the_readme_is_a_short_page_that_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    first_block = re.search(r"```\w*\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    order = [text.index(h) for h in ("\n## Install\n", "\n## Calibrate your own file", "\n## Is my model supported?",
                                     "\n## Exit codes\n")]
    assert order == sorted(order)


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in _pages():
        text = re.sub(r"```.*?```|`[^`\n]*`", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_usage_table_names_every_calibrate_option_and_no_other() -> None:
    help_text = CliRunner().invoke(calibrate, ["--help"], terminal_width=200)
    assert help_text.exit_code == 0
    declared = _declared_flags(calibrate) - {"--help"}
    assert all(flag in help_text.output for flag in declared)
    documented = _table_flags(_section(USAGE.read_text(encoding="utf-8"), "`calibrate` options"))
    assert documented - declared == set(), "documented but not an option of calibrate"
    assert declared - documented == set(), "an option of calibrate missing from docs/usage.md"


def test_the_readme_names_only_real_options() -> None:
    readme_flags = _table_flags(_section(README.read_text(encoding="utf-8"), "Common options"))
    assert readme_flags and readme_flags <= _declared_flags(calibrate)
