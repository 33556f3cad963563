"""`fp8stream verify IN OUT`: compare a checkpoint with its calibrated output, tensor by tensor."""

from __future__ import annotations

import json

import click

from fp8stream.commands.common import EXIT_CODES, run_guarded
from fp8stream.errors import FP8StreamError
from fp8stream.verify import Comparison, compare_files


def render(before: str, after: str, comparison: Comparison) -> str:
    lines = [f"{'expected  ' if d.expected else 'UNEXPECTED'}  {d.name}: {d.detail}" for d in comparison.differences]
    lines.append(f"{before} -> {after}: {comparison.summary()}")
    return "\n".join(lines)


@click.command(epilog=EXIT_CODES)
@click.argument("before", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("after", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def verify(before: str, after: str, as_json: bool) -> None:
    """Compare IN with OUT and report each difference; exit 1 if they differ where they must not.

    Tensors in both files must have the same dtype, shape and bytes. Expected differences: an
    activation scale added, replaced or moved (a finite, positive F32 scalar), a comfy_quant
    marker differing only in full_precision_matrix_mult, fp8stream's own metadata.

    The byte comparison: it runs no model (`check` does; `inspect` is the header-only view).
    """

    def body() -> None:
        comparison = compare_files(before, after)
        click.echo(json.dumps(comparison.to_dict()) if as_json else render(before, after, comparison))
        if not comparison.ok:
            raise FP8StreamError(f"{after} differs from {before} where it must not "
                                 f"({len(comparison.unexpected)} unexpected differences)")

    run_guarded(body)
