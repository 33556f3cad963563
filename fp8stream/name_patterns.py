"""Layer names said compactly for people: `double_blocks.{0,1}.{img,txt}_mod.lin` for the four
layers it expands to. Each pattern expands to exactly names of the list (a brace expansion, as a
shell does it), never to a name that is not there, so a reader can trust what a line covers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A name in tokens: letter runs, digit runs, and single separators ('.', '_', ...).
_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]")

Pattern = tuple[frozenset[str], ...]  # one set of alternatives per token position


def _token_key(token: str) -> tuple[int, int | str]:
    return (0, int(token)) if token.isdigit() else (1, token)


def _merge_at(patterns: list[Pattern], position: int) -> list[Pattern]:
    """Patterns equal everywhere but at `position` become one with the union there (still an
    exact product, so the merged pattern expands to the same names)."""
    merged: dict[tuple, set[str]] = {}
    for p in patterns:
        if position >= len(p):
            merged.setdefault((len(p), p), set())
            continue
        key = (len(p), p[:position] + p[position + 1:])
        merged.setdefault(key, set()).update(p[position])
    out = []
    for (_, rest), alternatives in merged.items():
        if not alternatives:  # shorter than position: passed through
            out.append(rest)
            continue
        out.append(rest[:position] + (frozenset(alternatives),) + rest[position:])
    return out


def _numbers_text(numbers: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> '0..3,7': runs of three or more as a range."""
    parts, start = [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            run = numbers[start:i]
            parts.append(f"{run[0]}..{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)))
            start = i
    return ",".join(parts)


def _alternatives_text(alternatives: frozenset[str]) -> str:
    if len(alternatives) == 1:
        return next(iter(alternatives))
    tokens = sorted(alternatives, key=_token_key)
    # Leading zeros ('01') must be said as they are: only plain numbers become ranges.
    if all(t.isdigit() and str(int(t)) == t for t in tokens):
        return "{" + _numbers_text([int(t) for t in tokens]) + "}"
    return "{" + ",".join(tokens) + "}"


def _pattern_key(p: Pattern) -> list[tuple[int, int | str]]:
    return [_token_key(min(alternatives, key=_token_key)) for alternatives in p]


def compact_names(names: Iterable[str]) -> list[str]:
    """The fewest brace patterns this simple merge finds that expand to exactly `names`: names
    that differ in one token merge, the last token first, until nothing merges."""
    patterns: list[Pattern] = [tuple(frozenset([t]) for t in _TOKEN.findall(n)) for n in dict.fromkeys(names)]
    while True:
        before = len(patterns)
        for position in reversed(range(max((len(p) for p in patterns), default=0))):
            patterns = _merge_at(patterns, position)
        if len(patterns) == before:
            break
    patterns.sort(key=_pattern_key)
    return ["".join(_alternatives_text(a) for a in p) for p in patterns]
