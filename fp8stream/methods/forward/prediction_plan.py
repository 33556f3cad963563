"""Whether the forward method's pass predicts the output (methods/forward/prediction.py); torch-free."""

from __future__ import annotations

NOT_ASKED = "not asked for (--predict, or `fp8stream check OUT` later)"


def none_because(predict: bool, cannot_run: str | None, dry_run: bool, runs_after_prepare: bool,
                 ran_in_prepare: bool) -> str | None:
    """Why the pass runs no prediction's streams (None: it runs them where the rewrite asks)."""
    if not predict:
        return NOT_ASKED
    if cannot_run is not None:
        return f"the forward pass cannot run: {cannot_run}"
    if dry_run:
        return "a dry run runs no forward pass"
    if ran_in_prepare:  # its result decides the layout: it ran before the file's runs were known
        return ("the model code cannot run on meta tensors, so its forward pass ran before the header, "
                "which it decides, not on the file as written")
    if not runs_after_prepare:  # a stream the rewrite did not spool
        return "the forward pass does not run"
    return None
