"""Which checkpoint rows become which diffusers parameter, learned by running diffusers' own
converter once on a header-only stand-in.

Each checkpoint tensor of shape [rows, ...] is replaced by a float64 tensor [rows, 1, ...] whose
value in row r is `index * 2**24 + r` (index: the tensor's position). The converter renames,
splits fused qkv / linear1 weights and swaps norm_out halves as it would for real weights; the
values in its output then say, for every target parameter, which source rows it holds, in order.
float64 holds the code exactly (index < 2**29, rows < 2**24). FP8 companions (scales, markers)
are removed first: the converters do not know them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from fp8stream.families.family import Family
from fp8stream.names.suffixes import is_companion

ROW_BITS = 24


@dataclass(frozen=True)
class Run:
    """Rows [start, stop) of one checkpoint tensor (its own name, prefix included)."""

    source: str
    start: int
    stop: int


class MappingError(ValueError):
    """The converter's output does not describe the model (a family variant we do not know)."""


def stand_in(shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The stand-in state dict (keys as given) and the index -> name table."""
    names = [n for n in shapes if not is_companion(n)]
    state = {}
    for i, n in enumerate(names):
        shape = tuple(shapes[n])
        rows = shape[0] if shape else 1
        if rows >= 1 << ROW_BITS:
            raise MappingError(f"{n}: {rows} rows is more than the row code holds")
        code = torch.arange(rows, dtype=torch.float64) + float(i << ROW_BITS)
        state[n] = code.reshape((rows,) + (1,) * (len(shape) - 1)) if shape else code.reshape(())
    return state, names


def runs_of(value: torch.Tensor, names: list[str]) -> list[Run]:
    """Decode a converted stand-in tensor into runs of consecutive source rows."""
    flat = value.reshape(value.shape[0], -1)[:, 0] if value.dim() else value.reshape(1)
    codes = flat.to(torch.int64)
    if codes.numel() == 0:
        return []
    index, row = codes >> ROW_BITS, codes & ((1 << ROW_BITS) - 1)
    if not bool((codes.double() == flat).all()) or int(index.max()) >= len(names) or int(index.min()) < 0:
        raise MappingError("converter produced values that are not row codes")
    # a run breaks where the source changes or a row does not follow the one before it
    breaks = torch.ones_like(codes, dtype=torch.bool)
    breaks[1:] = (index[1:] != index[:-1]) | (row[1:] != row[:-1] + 1)
    starts = torch.nonzero(breaks).flatten().tolist() + [codes.numel()]
    return [Run(names[int(index[a])], int(row[a]), int(row[b - 1]) + 1)
            for a, b in zip(starts, starts[1:], strict=False)]


def derive_mapping(shapes: Mapping[str, tuple[int, ...]], prefix: str,
                   convert: Callable[[dict], dict]) -> dict[str, list[Run]]:
    """target parameter name -> runs of source rows. `shapes` uses the file's names; the
    converter sees them with `prefix` removed."""
    state, names = stand_in(shapes)
    bare = {n[len(prefix):] if prefix and n.startswith(prefix) else n: v for n, v in state.items()}
    converted = convert(bare)
    return {target: runs_of(v, names) for target, v in converted.items() if isinstance(v, torch.Tensor)}


def check_mapping(mapping: Mapping[str, list[Run]], params: Mapping[str, tuple[int, ...]],
                  shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Problems: model parameters the mapping lacks or fills with the wrong number of rows or
    the wrong row width. Empty when every parameter is fully described."""
    problems = []
    for name, shape in params.items():
        runs = mapping.get(name)
        if runs is None:
            problems.append(f"{name}: not in the checkpoint")
            continue
        rows = sum(r.stop - r.start for r in runs)
        width = {_row_numel(shapes[r.source]) for r in runs}
        want_rows = shape[0] if shape else 1
        if rows != want_rows or width != {_row_numel(shape)}:
            problems.append(f"{name}: model wants {tuple(shape)}, checkpoint gives {rows} rows of {width}")
    return problems


def _row_numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def family_renames(family: Family, blocks: int = 3) -> dict[str, str]:
    """diffusers Linear module (block index written `{}`) -> the checkpoint's layer, from the
    family's converter run on each of its real-size inventories, `blocks` deep (three: a model's
    last block may lack layers the others have); empty without model code or an inventory."""
    out: dict[str, str] = {}
    for _key, build in family.inventories if family.model is not None else ():
        shapes = {spec.name: spec.shape for spec in build(blocks)}
        cfg = family.model.config(shapes)
        mapping = derive_mapping(shapes, "", lambda state, cfg=cfg: family.model.convert(state, cfg))
        for module, layer in block_templates(linear_renames(mapping, shapes)).items():
            if out.setdefault(module, layer) != layer:
                raise MappingError(f"{module}: renamed to {out[module]} and {layer}")
    return out


def linear_renames(mapping: Mapping[str, list[Run]], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """diffusers Linear module -> the checkpoint's Linear whose rows it holds (a fused one such as
    qkv for each of its parts): every 2-D target weight whose rows all come from one 2-D weight."""
    out = {}
    for target, runs in mapping.items():
        sources = {r.source for r in runs}
        if len(sources) != 1 or not target.endswith(".weight"):
            continue
        source = sources.pop()
        if source.endswith(".weight") and len(shapes[source]) == 2:
            out[target[: -len(".weight")]] = source[: -len(".weight")]
    return out


def block_templates(renames: Mapping[str, str]) -> dict[str, str]:
    """The renames with the block index written `{}`: where both names' first number is the same
    and the pair recurs with at least two numbers (a block list), that number is the block's;
    pairs seen once stay as they are. MappingError if one template would give two names."""
    seen: dict[tuple[str, str], set[str]] = {}
    for module, layer in renames.items():
        key = (_template(module), _template(layer))
        if key[0] is not None and key[1] is not None and _first_number(module) == _first_number(layer):
            seen.setdefault(key, set()).add(_first_number(module))
    out = {}
    for module, layer in renames.items():
        key = (_template(module), _template(layer))
        module, layer = key if len(seen.get(key, ())) >= 2 else (module, layer)
        if out.setdefault(module, layer) != layer:
            raise MappingError(f"{module}: renamed to {out[module]} and {layer}")
    return out


def _first_number(name: str) -> str | None:
    return next((part for part in name.split(".") if part.isdecimal()), None)


def _template(name: str) -> str | None:
    """The name with its first number written `{}` (None: it has none)."""
    parts = name.split(".")
    i = next((i for i, part in enumerate(parts) if part.isdecimal()), None)
    return None if i is None else ".".join(parts[:i] + ["{}"] + parts[i + 1:])
