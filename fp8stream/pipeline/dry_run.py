"""`--dry-run`: what the real run would do, without writing or calibrating.

The small tensors that decide "kept" or "replaced" (weight scales, existing input scales,
comfy_quant markers) are read by name with positioned reads; weights are not read. The method
makes its header-only decisions (`prepare` on a `ModelView` with `dry_run`: the forward pass's
meta pass, no pass run), so the layers it keeps weight-only are the run's; a scale the method
would compute is reported as not computed (null in JSON), and layers only the real pass can
decide are named (`MethodPlan.undecided`). A pipe cannot be read twice: its existing scales are
not judged, and the report says so.
"""

from __future__ import annotations

from fp8stream.formats.plan_types import LayerPlan, RewritePlan
from fp8stream.io.source import TensorSource
from fp8stream.pipeline.loop import StreamState, decode_scale, facts_from_state, rewrite_marker
from fp8stream.pipeline.scale_resolution import LayerFacts


def dry_run_state(plans: list[RewritePlan], source: TensorSource, keep_weight_only: bool) -> StreamState:
    """What the stream would have learnt of the small tensors, read by name."""
    state = StreamState()
    for plan in plans:
        for key in plan.scalar_keys:
            state.values[key] = decode_scale(source.get(key), source.info(key).dtype)
        for marker, layer_plan in plan.plan_by_marker.items():
            rewrite_marker(source.get(marker), layer_plan, plan.out_sizes[marker], keep_weight_only, state)
    return state


def dry_run_facts(calibrated: list[LayerPlan], state: StreamState | None) -> dict[str, LayerFacts]:
    if state is not None:
        return facts_from_state(calibrated, state, weights_seen=False)
    return {p.layer.name: LayerFacts(1.0, None, bool(p.layer.weight_only), None,
                                     ("dry run of a pipe: existing scales and markers not read",))
            for p in calibrated}
