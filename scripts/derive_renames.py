"""Write each family's diffusers -> checkpoint layer renames, derived from its own converter
(fp8stream.methods.forward.mapping.family_renames), into the family's module: the DIFFUSERS_RENAMES block
between the START and END markers, one entry per line, which the module passes to its Family as
`diffusers_renames`. A module that has no block yet gets one just above `FAMILY = Family(` (and a
note: pass it to Family). Run it after a family's model code or inventory changes, or diffusers'
converters do; tests/test_renames.py says when it is due.
Usage: python scripts/derive_renames.py [--check]  (--check: write nothing, exit 1 if a module is stale)"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fp8stream.families  # noqa: E402
from fp8stream.families import FAMILIES, Family  # noqa: E402
from fp8stream.methods.forward.mapping import family_renames  # noqa: E402

START = "# renames: derived by scripts/derive_renames.py from this family's converter, do not edit\n"
END = "# end of derived renames\n"
FAMILY_LINE = "FAMILY = Family("
LINE_LENGTH = 120  # ruff's, pyproject.toml
Renames = tuple[tuple[str, str], ...]


def derived_renames() -> dict[str, Renames]:
    """Every family whose converter renames at least one module (identities kept: they strip a
    stats name's own prefix), in registry order; each family's entries sorted."""
    out = {}
    for family in FAMILIES:
        renames = family_renames(family)
        if any(module != layer for module, layer in renames.items()):
            out[family.name] = tuple(sorted(renames.items()))
    return out


def family_modules() -> dict[str, Path]:
    """Family name -> the file of the module of this package that declares it (its FAMILY)."""
    out = {}
    for info in pkgutil.iter_modules(fp8stream.families.__path__):
        module = importlib.import_module(f"fp8stream.families.{info.name}")
        family = vars(module).get("FAMILY")
        if isinstance(family, Family):
            out[family.name] = Path(module.__file__)
    return out


def block(renames: Renames) -> str:
    """The generated block in ruff format's own layout: one entry a line, or split as ruff format
    splits it where that line would pass ruff's 120 characters."""
    entries = "".join(_entry(module, layer) for module, layer in renames)
    return START + ("DIFFUSERS_RENAMES = (\n" + entries + ")\n" if renames else "DIFFUSERS_RENAMES = ()\n") + END


def _entry(module: str, layer: str) -> str:
    line = f'    ("{module}", "{layer}"),\n'
    return line if len(line) <= LINE_LENGTH + 1 else f'    (\n        "{module}",\n        "{layer}",\n    ),\n'


def updated(text: str, renames: Renames) -> str:
    """The module's text with its block rewritten; a module without one gets it just above its
    FAMILY (and the comments on it); one without a block or renames is unchanged."""
    if START in text:
        head, rest = text.split(START, 1)
        return head + block(renames) + rest.split(END, 1)[1]
    if not renames:
        return text
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(FAMILY_LINE))
    while at > 0 and lines[at - 1].startswith("#"):
        at -= 1
    return "".join(lines[:at]) + block(renames) + "\n\n" + "".join(lines[at:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a module is stale")
    check = parser.parse_args(argv).check
    derived, modules = derived_renames(), family_modules()
    problems = []
    for family in FAMILIES:
        path, renames = modules[family.name], derived.get(family.name, ())
        name = path.relative_to(ROOT)
        text = path.read_text(encoding="utf-8")
        new = updated(text, renames)
        if new != text:
            problems.append(f"{name}: {'stale' if check else 'written'}")
            if not check:
                path.write_text(new, encoding="utf-8")
        if renames and "diffusers_renames=DIFFUSERS_RENAMES" not in new:
            problems.append(f"{name}: pass diffusers_renames=DIFFUSERS_RENAMES to its Family(...)")
    print("\n".join(problems) or "every family's renames are up to date")
    if check and problems:
        print("run python scripts/derive_renames.py")
    return 1 if check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
