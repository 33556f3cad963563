"""The conditioning path from the header alone: which checkpoint weights read one vector per
sample (timestep, guidance and pooled-text embedders, AdaLN modulation), and which of those
change with the sampling step, found by running the model once on meta tensors (shapes only:
nothing read, nothing computed).

Why the step matters: in real sampling the step's time changes at every call and the text,
the pooled vector and the guidance do not. A layer whose one vector per sample follows the
time (the timestep embedder, every modulation) has a range that dynamic scaling follows call by
call and one static scale cannot, the real max included; a layer that reads only the guidance
or the pooled text sees the same vector all through a run, which one static scale can fit. So
the step's layers are the first kept weight-only (forward_method.py). Which tensors depend on the
time is traced, not named: every tensor an operation computes from a traced one is traced,
from the synthetic times (`SamplePlan.timesteps`) through the family's own inputs (t x 1000,
the noised latents) into the model.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

from fp8stream.families.samples import SamplePlan
from fp8stream.methods.forward import derived_cache
from fp8stream.methods.forward.engine import per_sample_weights, reads_one_vector_per_sample
from fp8stream.methods.forward.forward_pass import Prepared, meta_model
from fp8stream.names.suffixes import WEIGHT

META_SAMPLES = 3  # no token count is 3: a 2-D input of 3 rows is one vector per sample


@dataclass(frozen=True)
class ConditioningPath:
    order: tuple[str, ...]  # checkpoint weights that read one vector per sample, in execution order
    per_step: frozenset[str]  # those whose vector changes with the sampling step's time
    ran: frozenset[str]  # every checkpoint weight a Linear that ran reads (the others get no input)


class StepTrace(TorchFunctionMode):
    """Marks every tensor computed from a marked one (weak references: nothing kept alive)."""

    def __init__(self) -> None:
        super().__init__()
        self._marked: dict[int, weakref.ref] = {}

    def mark(self, t: torch.Tensor) -> torch.Tensor:
        self._marked[id(t)] = weakref.ref(t)
        return t

    def marked(self, t: object) -> bool:
        ref = self._marked.get(id(t))
        return ref is not None and ref() is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(self.marked(a) for a in _tensors(args)) or (kwargs and any(self.marked(a) for a in _tensors(kwargs))):
            for o in _tensors(out):
                self.mark(o)
            name = getattr(func, "__name__", "")
            if args and isinstance(args[0], torch.Tensor) and (name == "__setitem__" or name.endswith("_")):
                self.mark(args[0])  # written in place (x[i] = t returns None)
        return out


def _tensors(obj: object) -> Iterator[torch.Tensor]:
    """The tensors in an operation's arguments or results (nested tuples, lists, dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _TracedPlan(SamplePlan):
    """The synthetic batch whose times are marked in `trace`."""

    def __init__(self, trace: StepTrace) -> None:
        super().__init__(batch=META_SAMPLES)
        self.trace = trace

    def timesteps(self) -> torch.Tensor:
        return self.trace.mark(super().timesteps())


def from_shapes(prepared: Prepared) -> ConditioningPath | None:
    """The conditioning path of the prepared model (built again on the meta device, buffers
    too: 0.1 s for Flux-dev; the pass on meta tensors about 0.9 s at full depth on 2 cores).
    None when its code needs values (an MoE's routing counts tokens per expert): then the pass
    itself finds the layers (engine.Pass.per_sample). HiDream (MoE routing), Lumina 2 and
    HunyuanVideo 1.5 (`.item()`) take that path. Only a run whose pass will run asks
    (ForwardMethod.prepare): not a stream's spool probe, not --no-spool. From the user's cache
    when an earlier run derived it from the same header layout (derived_cache.py)."""
    cached = derived_cache.load(prepared.derived_key, "conditioning", _path_from)
    if cached is not None:
        return cached[0]
    path = _traced(prepared)
    derived_cache.store(prepared.derived_key, "conditioning", {"path": None if path is None else {
        "order": list(path.order), "per_step": sorted(path.per_step), "ran": sorted(path.ran)}})
    return path


def _path_from(payload: dict) -> ConditioningPath | None:
    """A ConditioningPath from an entry of from_shapes (None: the model code needs values)."""
    path = payload["path"]
    if path is None:
        return None
    return ConditioningPath(tuple(str(w) for w in path["order"]), frozenset(str(w) for w in path["per_step"]),
                            frozenset(str(w) for w in path["ran"]))


def _traced(prepared: Prepared) -> ConditioningPath | None:
    """from_shapes's work: the model run once on meta tensors, its Linears hooked."""
    family, cfg, mapping = prepared.family, prepared.config, prepared.mapping
    model = meta_model(family, cfg, real_buffers=False).to("meta")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    order: list[str] = []
    per_step: set[str] = set()
    ran: set[str] = set()
    trace = StepTrace()

    def seen(name: str):
        def hook(module, args) -> None:
            ran.add(name)
            if reads_one_vector_per_sample(args[0], frozenset({META_SAMPLES})):
                if name not in order:
                    order.append(name)
                if trace.marked(args[0]):  # at any of its calls
                    per_step.add(name)
        return hook

    handles = [m.register_forward_pre_hook(seen(n)) for n, m in linears.items()]
    try:
        with torch.no_grad(), warnings.catch_warnings(), trace:
            warnings.simplefilter("ignore")
            inputs = {k: v.to("meta") if isinstance(v, torch.Tensor) else v
                      for k, v in family.inputs(cfg, _TracedPlan(trace)).items()}
            model(**inputs, return_dict=False)
    except Exception:  # noqa: BLE001  code that needs values (bincount, .item(), a copy out of a
        return None  # meta tensor) or fails otherwise: the real pass then finds the layers, or says why not
    finally:
        for h in handles:
            h.remove()
    weights = per_sample_weights(order, linears, mapping)
    step = per_sample_weights([n for n in order if n in per_step], linears, mapping)
    return ConditioningPath(tuple(weights), frozenset(step),
                            frozenset(r.source for n in ran for r in mapping[n + WEIGHT]))
