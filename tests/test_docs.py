"""The docs stay true to the tree (issue 23): the README is a newcomer's page that starts with the
two commands, every relative link resolves, docs/usage.md's option table is the CLI's, every table
of measured figures in docs/ names its commit and machine, and every scripts/ command quoted exists
with the options shown."""

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
DOCS = ROOT / "docs"
COMMIT = re.compile(r"`[0-9a-f]{7,40}`")
# a measured figure: a number in dB, seconds, bytes, a percentage or an x-ratio ("1.28x")
MEASURED_CELL = re.compile(r"\d(?:\s?(?:dB|s|min|KB|MB|GB|MiB|GiB|MB/s|GB/s)|%|x)(?![\w/])")
MEASURED_HEADER = re.compile(r"\bdB\b|\((?:s|MB|GB|MiB|GiB)\)|\bMB/s\b|\bRSS\b|\bwall\b|×cp")
SCRIPT_COMMAND = re.compile(r"scripts/([\w.]+)([^|;&`#]*)")  # up to a pipe, a list or a comment


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


def _machines() -> list[str]:
    """The machine names docs/speed.md defines in its opening list (`- **the 2-core machine**: ...`)."""
    intro = (DOCS / "speed.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    return re.findall(r"^- \*\*(.+?)\*\*:", intro, flags=re.M)


def _sections(page: Path) -> list[tuple[str, str]]:
    """(heading, text) of each part of a page, from a heading of any level to the next; code blocks dropped."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    return [(page.name, parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]


def _tables(text: str) -> list[list[str]]:
    tables: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    return [table for table in tables if table]


def _holds_measurements(table: list[str]) -> bool:
    """A unit of a measurement in the header (dB, (s), (MB), RSS, wall, ×cp) or a measured figure in a
    body cell; code spans (option names, defaults) are left out."""
    rows = [re.sub(r"`[^`]*`", "", row) for row in table]
    return bool(MEASURED_HEADER.search(rows[0])) or any(MEASURED_CELL.search(row) for row in rows[2:])


def _quoted_commands(page: Path) -> list[str]:
    """The code a page quotes, one command each: the lines of fenced blocks and of indented blocks (a
    trailing backslash joins two), and `spans`."""
    text = page.read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```.*?```", text, flags=re.S))
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    lines = re.sub(r"\\\n\s*", " ", blocks + "\n" + "\n".join(re.findall(r"^ {4}.*$", rest, flags=re.M)))
    spans = re.findall(r"`([^`]+)`", rest)
    return [" ".join(code.split()) for code in (*lines.splitlines(), *spans)]


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


def test_every_table_of_measured_figures_names_its_commit_and_machine() -> None:
    """docs/README.md's promise, checked from the text alone: the section (heading to heading) around
    every table of measured figures names a commit (7+ hex digits in backticks) and one of the
    machines docs/speed.md defines. Whether that commit is the right one is for a reader of git log."""
    machines = [name.lower() for name in _machines()]
    assert "the 2-core machine" in machines and "the device h200" in machines
    missing, pages_measured = [], set()
    for page in sorted(DOCS.glob("*.md")):
        for heading, text in _sections(page):
            flat = " ".join(text.split()).lower()  # a name may wrap over two lines
            for table in filter(_holds_measurements, _tables(text)):
                pages_measured.add(page.name)
                where = f"{page.name} '{heading.strip()}' {table[0][:50]}"
                if not COMMIT.search(flat):
                    missing.append(f"{where}: no commit")
                if not any(name in flat for name in machines):
                    missing.append(f"{where}: no machine of speed.md")
    assert {"speed.md", "quality.md", "remote.md", "usage.md"} <= pages_measured  # the rule finds them
    assert not missing, missing


def test_every_quoted_script_command_exists_with_its_options() -> None:
    wrong, seen = [], 0
    for page in (README, *sorted(DOCS.glob("*.md"))):
        for code in _quoted_commands(page):
            for name, args in SCRIPT_COMMAND.findall(code):
                seen += 1
                script = ROOT / "scripts" / name
                if not script.is_file():
                    wrong.append(f"{page.name}: scripts/{name} does not exist")
                    continue
                source = script.read_text(encoding="utf-8")
                wrong += [f"{page.name}: scripts/{name} has no {option}"
                          for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", args) if f'"{option}"' not in source]
    assert seen >= 10
    assert not wrong, wrong
