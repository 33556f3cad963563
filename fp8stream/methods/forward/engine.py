"""The streaming forward pass: the family's model (any torch module: diffusers' DiTs,
transformers' text encoders) built without weights, each nn.Linear materialised from the
checkpoint just before it runs and freed just after.

Memory: the model's parameters are created on the meta device (no storage); the small rest
(norms, convolutions, biases, block-level tables) is loaded once; a Linear's weight exists only
between its pre-hook and its post-hook, so one weight is live at a time (`peak_live`). An
nn.Embedding (a text encoder's vocabulary: UMT5-XXL's is 4 GB as float32) is never loaded
whole: its pre-hook reads only the rows of the ids it is called with and renumbers the ids,
its post-hook frees them. Buffers computed at construction (rotary tables) are real: only
parameters go to the meta device.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Mapping

import torch
import torch.nn as nn

from fp8stream.methods.forward import ranges
from fp8stream.methods.forward.lockstep import Lockstep
from fp8stream.methods.forward.mapping import Run
from fp8stream.methods.forward.prefetch import Prefetcher
from fp8stream.methods.forward.ranges import Pass, Ranges
from fp8stream.methods.forward.row_source import Reader
from fp8stream.names.suffixes import WEIGHT


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside goes to the meta device (buffers stay real). The
    layers' own init then runs on meta tensors: no memory, no time."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=False)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


class PassStopped(Exception):
    """The run the pass served is over (ForwardMethod.close): not an error anyone sees."""


class Diverged(RuntimeError):
    """A micro-batch reached a Linear whose weight is not loaded: the calls in lock step took
    different paths through the model (value-dependent control flow, an MoE's routing)."""


EMBEDDING_GAP = 16  # ids closer than this are read in one positioned read (fewer, larger reads)


class StreamingModel:
    """A model whose Linear weights come from the checkpoint one at a time, and whose
    embedding tables are read only at the rows its ids ask for."""

    def __init__(self, model: nn.Module, mapping: Mapping[str, list[Run]], reader: Reader,
                 device: torch.device) -> None:
        self.model = model
        self.mapping = mapping
        self.reader = reader
        self.device = device
        self.linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.embeddings = {n: m for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
        self.state = Pass()
        self.ranges = Ranges()
        self.prefetch: Prefetcher | None = None
        self.on_linear = lambda name: None  # called with a Linear's name once it ran (a progress bar)
        self.sample_counts: frozenset[int] = frozenset()  # the micro-batches' sample counts (forward_pass.py)
        self.lockstep: Lockstep | None = None  # micro-batches: each Linear runs on all while loaded
        self.stop: threading.Event | None = None  # set: the run is over, the pass ends at its next Linear
        # lock step: the first calls are the pass's own, the ranges and traces theirs only (calibrate's
        # prediction and check run more streams after them: comparison.py); None: every call
        self.measured_calls: int | None = None
        self.readers: dict[str, list[str]] = {}  # checkpoint weight -> the Linears it feeds
        for name in self.linears:
            for r in mapping[name + WEIGHT]:
                self.readers.setdefault(r.source, []).append(name)

    def gather(self, target: str) -> torch.Tensor:
        """A parameter's float32 value from its source rows (dequantized where FP8); a Linear's
        weight from the read-ahead while the model is hooked."""
        runs = self.mapping[target]
        if self.prefetch is not None and target in self.prefetch:
            reads = [p.device_bytes if p.device_bytes is not None else p.raw for p in self.prefetch.take(target)]
        else:
            reads = [None] * len(runs)
        parts = [self.reader.rows(r.source, r.start, r.stop, read=b) for r, b in zip(runs, reads, strict=True)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)

    def load_rest(self) -> None:
        """Every parameter except the Linear weights, once, on the device; buffers the file holds
        too (SD3's pos_embed depends on the sample size it was built for: the file's is right),
        the others (rotary tables) as the model computed them."""
        hooked = {n + WEIGHT for n in [*self.linears, *self.embeddings]}
        for module_name, module in self.model.named_modules():
            for leaf, param in list(module._parameters.items()):
                name = f"{module_name}.{leaf}" if module_name else leaf
                if param is None or name in hooked:
                    continue
                value = self.gather(name).reshape(param.shape).to(self.device)
                module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
            for leaf, buf in list(module._buffers.items()):
                name = f"{module_name}.{leaf}" if module_name else leaf
                if buf is not None and name in self.mapping:
                    module._buffers[leaf] = self.gather(name).reshape(buf.shape).to(buf.dtype).to(self.device)
                elif buf is not None:
                    module._buffers[leaf] = buf.to(self.device)

    @contextlib.contextmanager
    def hooked(self) -> Iterator[Pass]:
        """Hooks on every Linear and the weights' read-ahead; the ranges seen are in the Pass
        once the block exits (read back from the device once, not once per Linear)."""
        handles = []
        try:  # a signal may stop the set-up part way: the cleanup undoes only what was done
            for name, module in self.linears.items():
                handles.append(module.register_forward_pre_hook(self._pre(name)))
                handles.append(module.register_forward_hook(self._post(name)))
            order = [(n + WEIGHT, self.mapping[n + WEIGHT]) for n in self.linears]
            self.prefetch = Prefetcher(self.reader.source, order, self.device)
            for name, module in self.embeddings.items():
                handles.append(module.register_forward_pre_hook(self._embedding_pre(name)))
                handles.append(module.register_forward_hook(self._embedding_post(tuple(module.weight.shape))))
            yield self.state
        finally:
            if self.prefetch is not None:
                self.prefetch.close()
                self.prefetch = None
            for h in handles:
                h.remove()
            self.ranges.settle(self.state)

    def measures(self) -> bool:
        """Whether the running call is one whose ranges the pass keeps (measured_calls)."""
        return self.measured_calls is None or self.lockstep is None or self.lockstep.index() < self.measured_calls

    def _pre(self, name: str):
        def hook(module: nn.Module, args) -> None:
            if self.stop is not None and self.stop.is_set():
                raise PassStopped("the forward pass was stopped: the run it served is over")
            x = args[0].detach()
            if self.measures():
                self.ranges.add(self.ranges.amax, name, x)
                if reads_one_vector_per_sample(x, self.sample_counts) and name not in self.state.per_sample:
                    self.state.per_sample.append(name)
            if self.lockstep is not None and self.lockstep.index() > 0:  # loaded by micro-batch 0
                if module.weight.device.type == "meta":
                    raise Diverged(f"forward pass: micro-batches diverged at {name}")
                return
            w = self.gather(name + WEIGHT).reshape(module.weight.shape).to(self.device)
            module._parameters["weight"] = nn.Parameter(w, requires_grad=False)
            self.state.live += 1
            self.state.peak_live = max(self.state.peak_live, self.state.live)
            self.state.weights_read += 1
        return hook

    def _post(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            if self.measures():
                self.ranges.add(self.ranges.out_amax, name, output.detach())
            if self.lockstep is None or self.lockstep.is_last():  # every micro-batch has run it
                shape = module.weight.shape
                module._parameters["weight"] = nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)
                self.state.live -= 1
                self.on_linear(name)
            if self.lockstep is not None:
                self.lockstep.hand_over()
        return hook

    def embedding_rows(self, target: str, ids: list[int]) -> torch.Tensor:
        """Rows `ids` (sorted, unique) of an embedding table, float32, in the order given: near
        ids share one positioned read."""
        where: list[tuple[str, int]] = []  # (source tensor, row) of each id, through the runs
        runs, pos, k = self.mapping[target], 0, 0
        for i in ids:
            while i >= pos + runs[k].stop - runs[k].start:
                pos, k = pos + runs[k].stop - runs[k].start, k + 1
            where.append((runs[k].source, runs[k].start + i - pos))
        parts, a = [], 0
        for b in range(1, len(where) + 1):
            if b == len(where) or where[b][0] != where[a][0] or where[b][1] - where[b - 1][1] > EMBEDDING_GAP:
                lo, hi = where[a][1], where[b - 1][1] + 1
                block = self.reader.rows(where[a][0], lo, hi)
                parts.append(block[torch.tensor([r - lo for _, r in where[a:b]])])
                a = b
        return torch.cat(parts, 0)

    def _embedding_pre(self, name: str):
        def hook(module: nn.Module, args):
            ids = args[0]
            used, index = torch.unique(ids.detach().cpu(), return_inverse=True)
            rows = self.embedding_rows(name + WEIGHT, used.tolist()) if used.numel() else \
                torch.zeros((0,) + tuple(module.weight.shape[1:]))
            module._parameters["weight"] = nn.Parameter(rows.to(self.device), requires_grad=False)
            module.padding_idx = None  # a gradient-only setting, which must index the table
            return (index.reshape(ids.shape).to(ids.device), *args[1:])
        return hook

    @staticmethod
    def _embedding_post(shape: tuple[int, ...]):
        def hook(module: nn.Module, args, output) -> None:
            module._parameters["weight"] = nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)
        return hook

    def layer_amax(self, value_sources: Mapping[str, list[list[str]]]) -> dict[str, float]:
        """Input amax per checkpoint weight tensor, from the whole pass (ranges.py's rule)."""
        est = ranges.estimates(self.state.amax, self.state.out_amax, value_sources)
        return ranges.layer_amax(self.linears, self.mapping, est)

    def amax_now(self, weight: str, value_sources: Mapping[str, list[list[str]]]) -> float | None:
        """`weight`'s input amax by the same rule, from what the measured calls have seen so
        far (read back now): final once every Linear it feeds and every value projection an
        attention output's mix bound reads have run on every measured micro-batch."""
        linears = self.readers[weight]
        values = [n for name in linears for group in value_sources.get(name, []) for n in group]
        amax, out_amax = Ranges.now(self.ranges.amax, linears), Ranges.now(self.ranges.out_amax, values)
        est = ranges.estimates(amax, out_amax, {n: value_sources[n] for n in linears if n in value_sources})
        return ranges.layer_amax(linears, self.mapping, est).get(weight)

    def layer_per_sample(self) -> list[str]:
        """The checkpoint weights whose every Linear read one vector per sample, in the order
        they first ran."""
        return per_sample_weights(self.state.per_sample, self.linears, self.mapping)


def reads_one_vector_per_sample(x: torch.Tensor, sample_counts: frozenset[int]) -> bool:
    """A Linear input of one row per sample: [samples, features]. An MoE expert's 2-D input is
    its routed tokens, whose count is not a micro-batch's sample count."""
    return x.dim() == 2 and x.shape[0] in sample_counts


def per_sample_weights(order: list[str], linears, mapping: Mapping[str, list[Run]]) -> list[str]:
    """Checkpoint weights, in the order of `order` (diffusers Linears that read one vector per
    sample), whose every Linear is in `order` (a fused weight feeds several Linears)."""
    per_sample = set(order)
    mixed = {r.source for n in linears if n not in per_sample for r in mapping[n + WEIGHT]}
    out: dict[str, None] = {}
    for name in order:
        for r in mapping[name + WEIGHT]:
            if r.source not in mixed:
                out[r.source] = None
    return list(out)
