"""The self-check before the rename: trust nothing we wrote."""

from __future__ import annotations

import time

from fp8stream import verify
from fp8stream.errors import OutputError
from fp8stream.formats.plan_types import RewritePlan
from fp8stream.io.hashing import HashingStream
from fp8stream.io.reader import open_input, read_input_header
from fp8stream.io.storage import locate
from fp8stream.pipeline.inputs import ModelInput
from fp8stream.pipeline.outputs import OutputTarget
from fp8stream.report import FileReport, human_size


def check_written(path: str, plan: RewritePlan, stream: HashingStream | None) -> str | None:
    """Parse the written header back with the input validator and read every scale back.
    With --verify (`stream`: the input's HashingStream), the output is re-read whole and
    compared with the input; returns that comparison's summary."""
    source = open_input(locate(path))
    try:
        header = read_input_header(source)
        compressed = source.compressed
    finally:
        source.close()
    if [t.name for t in header.tensors] != [e.name for e in plan.entries]:
        raise RuntimeError("written header does not match the plan")
    started = time.monotonic()
    written = verify.read_back(path) if stream is not None or compressed else None
    scales = [t.name for t in plan.tail if t.scale_of is not None]
    bad = verify.unusable_scales(path, scales, written)
    if bad:
        raise OutputError(f"written output failed its check: {bad[0]} is not a finite, positive F32 scalar")
    if stream is None:
        return None
    comparison = verify.compare(verify.StreamSide(stream), written)
    if not comparison.ok:
        first = comparison.unexpected[0]
        raise OutputError(f"--verify: output differs from the input where it must not: {first.name}: {first.detail}"
                          f" ({len(comparison.unexpected)} unexpected differences)")
    seconds = stream.seconds + time.monotonic() - started
    return f"{comparison.summary()}; verify took {seconds:.2f} s (hashing while reading + re-reading the output)"


def note_verify_cost(report: FileReport, model: ModelInput, output: OutputTarget | None, by_name: int) -> None:
    """What --verify read beyond a plain run, in the report: OUT read back whole, and, where a
    plain run would copy at fixed places taking the method's reads (local files), IN's bytes the
    method read by name (`by_name`), read a second time since the stream hashed them first."""
    from fp8stream.pipeline.placed_run import copy_shares_reads

    again = by_name if copy_shares_reads(model, output, verify=False) else 0
    report.verify_read_bytes = report.bytes_written + again
    what = f"OUT read back whole ({human_size(report.bytes_written)})"
    if again:
        what += (f", and IN's weights read twice ({human_size(again)}: the stream hashed them, then the method "
                 "read them by name; a plain run's copy takes the method's reads)")
    report.notes.append(f"--verify read {human_size(report.verify_read_bytes)} more than a plain run: {what}")
