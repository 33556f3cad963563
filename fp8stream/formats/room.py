"""The output's layout before the method's choice: room for whatever it keeps weight-only.

A method knows which layers it keeps weight-only only once it is prepared (the forward pass:
torch and diffusers imported, the meta pass), but the data can go to its place before that (the
head start, pipeline/head_start.py) where no data tensor moves with the choice. Markers take room
for either flag (comfy_quant.marker_size); the header, whose length still depends on the choice
(the tail's scale entries, the flags in `_quantization_metadata`), is padded to a room that holds
the header of any choice: the header with no layer kept weight-only plus the one with every layer
the method may keep weight-only. An entry of any choice is in one of the two, and every entry but
the scales' is in both, which covers what a flag or an offset's extra digit adds to one. A legacy
scaled_fp8 marker inside the data is the exception: its size (0 or 2 elements) is the whole
file's weight-only flag, so such a file's data places wait for the method (`data_fixed` False).
"""

from __future__ import annotations

from fp8stream.formats.plan_types import RewritePlan
from fp8stream.io.header import encode_header


def _json_length(plan: RewritePlan) -> int:
    return len(encode_header(plan.entries, plan.metadata)[0]) - 8


def fix_room(plan: RewritePlan, none: RewritePlan, every: RewritePlan) -> None:
    """`plan`'s header room and whether its data places are fixed, from the layouts of the same
    file with no layer and with every layer the method may choose kept weight-only."""
    plan.header_room = _json_length(none) + _json_length(every)
    plan.data_fixed = none.data_entries == every.data_entries


def check_kept(early: RewritePlan, final: RewritePlan) -> None:
    """The plan made after the method's choice places every data tensor where the plan made
    before it did, when that one says they are fixed (data may already be there): else a bug."""
    if early.data_fixed and early.data_entries != final.data_entries:  # the room is early's (build_plan's `room`)
        raise RuntimeError("internal error: the method's weight-only choice moved data tensors of the output "
                           "(formats/room.py)")
