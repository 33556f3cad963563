"""Check `fp8stream check`'s model of ComfyUI against ComfyUI itself: for small synthetic
checkpoints, one FP8 linear at a time, what ComfyUI's loader and `Linear.forward` compute on a
known input beside what `check` models for the same layer (`formats.comfy_runtime.layer_run`'s
setting, run through `methods.forward.comparison`'s stream-2 hooks:
x_q = clamp(x / s, -448, 448) to FP8, (x_q * s) @ W^T + bias). One line per case: PASS, FAIL or
NOTE (a difference known and not modelled, docs/comfyui.md), what each side did, the max abs and
rel difference (rel: to the largest |output| of ComfyUI), and each side's SQNR against the layer
in full precision. Exit 1 when a case FAILs. ComfyUI runs in float32 (check's arithmetic: the
outputs must agree within TOLERANCE), or with --bf16 in bfloat16 as on a GPU (the SQNRs must
agree within BF16_DB: check does not model bfloat16's rounding).

A dev script, not a CI test (CI has no ComfyUI). It needs ComfyUI importable: a venv of its own,
outside the repo, with the same torch as the project's:

    python3.11 -m venv /tmp/comfy/venv            # no --system-site-packages
    V=/tmp/comfy/venv/bin/pip
    $V install --no-deps torch==2.13.0            # the project's torch (the CPU build), or its wheel
    $V install filelock typing_extensions sympy networkx jinja2 fsspec "numpy<2.3" safetensors \\
        packaging comfy-kitchen==0.2.40 click zstandard xxhash   # the last three: fp8stream's own
    $V install --no-deps ./pip-and-uv-installable-ComfyUI   # a checkout of hiddenswitch's package
    # what `import comfy.sd, comfy.ops` asks for, one at a time:
    $V install pyyaml einops pillow ConfigArgParse frozendict aio-pika aiohttp comfy-aimdo psutil \\
        tqdm humanize natsort gguf sentencepiece av transformers opentelemetry-distro \\
        opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-instrumentation-aio-pika \\
        opentelemetry-instrumentation-requests opentelemetry-instrumentation-aiohttp-server \\
        opentelemetry-instrumentation-aiohttp-client opentelemetry-instrumentation-urllib3 \\
        opentelemetry-processor-baggage opentelemetry-semantic-conventions

torchvision's CPU wheel does not load against this torch: the script puts a stand-in module for
it on the path (ComfyUI imports it; the FP8 linear path never calls it). It sets
`comfy.model_management.SUPPORT_FP8_OPS = True` (what --supports-fp8-compute sets), so ComfyUI's
FP8 linear path runs on the CPU (comfy-kitchen's eager backend). Run from the repo root:

    PYTHONPATH=. /tmp/comfy/venv/bin/python scripts/comfy_truth.py --fp8stream-python .venv/bin/python

`--fp8stream-python` runs `fp8stream calibrate` for the cases on our own outputs (default: this
interpreter). Checked against ComfyUI upstream fe2511468d6b (2026-02-03) as merged in
hiddenswitch/pip-and-uv-installable-ComfyUI 87606c5f, comfy-kitchen 0.2.40.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import math
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from comfy_truth_cases import Case, calibrated_cases, synthetic_cases
from fp8stream.synthetic.checkpoint import write_checkpoint

# float32: max |difference| / max |ComfyUI's output|. ComfyUI computes x * (1/s), check x / s: where
# the two round apart, one input moves by one FP8 step, an output by up to about 1e-2 of the largest
TOLERANCE = 1e-2
# --bf16: the SQNRs against full precision within this; bfloat16's own rounding (about 50 dB, which
# check does not model) counts as exact beyond BF16_EXACT_DB
BF16_DB, BF16_EXACT_DB = 0.5, 40.0


class _StandIn(types.ModuleType):
    """Any attribute of a stand-in module: a placeholder that fails only when called."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


class _Placeholder:
    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in: {self._name} was called")

    def __getattr__(self, attr: str):
        return _Placeholder(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):
        return (object,)


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def import_comfy():
    """ComfyUI's modules, its FP8 compute switched on (what --supports-fp8-compute sets)."""
    sys.meta_path.insert(0, _TorchvisionStandIn())
    sys.argv[1:] = []  # ComfyUI parses the command line when imported: this script's options are not its
    import comfy.model_management as mm

    mm.SUPPORT_FP8_OPS = True
    import comfy.model_detection
    import comfy.ops
    import comfy.utils

    return comfy


@dataclass
class Side:
    """One side's result for a layer: what it did, its output (None: it stopped with an error)."""

    did: str
    output: torch.Tensor | None = None
    error: str | None = None
    full: torch.Tensor | None = None  # check's side: the layer in full precision (stream 1), to give SQNRs


def comfy_linear(comfy, path: Path, layer: str, loader: str, dtype: torch.dtype):
    """The layer's module as ComfyUI's loader builds it: 'diffusion' (Load Diffusion Model:
    load_diffusion_model_state_dict), 'checkpoint' (load_state_dict_guess_config) or
    'text_encoder' (load_clip, then sd1_clip's operations)."""
    sd, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    if loader == "diffusion":
        prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
        stripped = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
        sd = stripped or sd
        sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata=metadata)
        layer = layer.removeprefix(prefix) if stripped else layer
    else:
        prefix = comfy.model_detection.unet_prefix_from_state_dict(sd) if loader == "checkpoint" else ""
        sd, metadata = comfy.utils.convert_old_quants(sd, prefix, metadata=metadata)
    quant = comfy.utils.detect_layer_quantization(sd, "")
    if loader == "text_encoder":
        ops = comfy.ops.mixed_precision_ops(quant, dtype, full_precision_mm=True) if quant else \
            comfy.ops.manual_cast
    else:
        config = types.SimpleNamespace(quant_config=quant)
        ops = comfy.ops.pick_operations(None, dtype, load_device=torch.device("cpu"), model_config=config,
                                        inference_mode=True)
    own = {k[len(layer) + 1:]: v for k, v in sd.items() if k.startswith(layer + ".")}
    weight = own["weight"]
    module = ops.Linear(weight.shape[1], weight.shape[0], bias="bias" in own)
    module.load_state_dict(own, strict=False)
    return module


def comfy_side(comfy, case: Case, path: Path, x: torch.Tensor) -> Side:
    """ComfyUI's module run on `x` in x's dtype (its compute dtype: float32 unless --bf16)."""
    try:
        module = comfy_linear(comfy, path, case.layer, case.loader, x.dtype)
    except Exception as e:  # noqa: BLE001 (what ComfyUI raises is the finding)
        return Side("stops loading", error=f"{type(e).__name__}: {e}")
    scale = getattr(module, "input_scale", None)
    if module._full_precision_mm or getattr(module, "layout_type", None) is None:
        did = "full precision"
    else:
        did = "fp8, s=" + ("none" if scale is None else _values(scale))
    try:
        with torch.no_grad():
            return Side(did, module(x.clone()).float())
    except Exception as e:  # noqa: BLE001
        return Side(did + ": stops", error=f"{type(e).__name__}: {e}")


def _values(t: torch.Tensor) -> str:
    v = t.detach().float().reshape(-1).tolist()
    return f"{v[0]:.4g}" if len(v) == 1 else "[" + ",".join(f"{e:.3g}" for e in v[:3]) + (",..]" if len(v) > 3 else "]")


def _comfy_only(streams_cls):
    """comparison.Streams with every call on stream 2 (the file as ComfyUI runs it)."""

    class ComfyOnly(streams_cls):
        def stream(self) -> str:
            return "comfy"

    return ComfyOnly(None, 1)


def check_side(case: Case, path: Path, x: torch.Tensor) -> Side:
    """What `check` models for the layer: its LayerRun, run through comparison.py's stream-2 hooks
    on a torch Linear holding the weight as the pass decodes it."""
    from fp8stream.formats.comfy_runtime import comfy_runs
    from fp8stream.formats.layers import take_inventory
    from fp8stream.io.storage import locate
    from fp8stream.methods.forward import comparison
    from fp8stream.methods.forward.row_source import Reader
    from fp8stream.pipeline.inputs import open_model

    with open_model(locate(str(path))) as model, model.tensor_source() as source:
        header = model.whole
        layer = next(f for f in take_inventory(header).layers if f.name == case.layer)
        run = comfy_runs(header, source)[layer.weight.name]
        reader = Reader(source, {layer.weight.name: layer.weight_scale})
        weight = reader.rows(layer.weight.name, 0, layer.out_features)
        bias_name = case.layer + ".bias"
        bias = reader.rows(bias_name, 0, layer.out_features) if header.get(bias_name) else None
    module = torch.nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    with torch.no_grad():
        full = module(x.clone())
    plan = comparison.linear_plan([comparison.Segment(layer.weight.name, 0, layer.out_features, run)],
                                  layer.out_features)
    streams = _comfy_only(comparison.Streams)
    module.register_forward_pre_hook(streams.pre_hook(plan))
    module.register_forward_hook(streams.post_hook(plan))
    did = "full precision" if run.weight_only else f"fp8, s={run.scale:.4g}"
    if run.stops:
        did = f"stops ({run.why[:60]})"
    with torch.no_grad():
        return Side(did, module(x.clone()).float(), full=full)


def sqnr_db(output: torch.Tensor | None, full: torch.Tensor) -> float:
    """The output's SQNR against full precision (float64 sums); NaN where it has no figure."""
    if output is None or torch.isnan(output).any():
        return math.nan
    noise = float((output.double() - full.double()).square().sum())
    return math.inf if noise == 0 else 10 * math.log10(float(full.double().square().sum()) / noise)


@dataclass
class Verdict:
    passed: bool
    abs_diff: float = 0.0
    rel_diff: float = 0.0
    notes: list[str] = field(default_factory=list)


def judge(comfy: Side, check: Side, bf16: bool) -> Verdict:
    """PASS: both stop with an error (check models it), or the same NaN places and outputs within
    TOLERANCE (--bf16: SQNRs within BF16_DB)."""
    if comfy.error is not None or check.did.startswith("stops"):
        return Verdict(comfy.error is not None and check.did.startswith("stops"), math.nan, math.nan)
    a, b = comfy.output, check.output
    if bf16:
        db = [min(sqnr_db(y, check.full), BF16_EXACT_DB) for y in (a, b)]
        same = db[0] == db[1] or abs(db[0] - db[1]) <= BF16_DB  # NaN == NaN fails both: no figure on one side
        no_figures = all(math.isnan(d) for d in db) and torch.equal(torch.isnan(a), torch.isnan(b))
        return Verdict(same or no_figures, *_diffs(a, b))
    return Verdict(bool(torch.equal(torch.isnan(a), torch.isnan(b))) and _diffs(a, b)[1] <= TOLERANCE, *_diffs(a, b))


def _diffs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Max |a - b| where both are numbers, and it over max |a| there."""
    finite = ~(torch.isnan(a) | torch.isnan(b))
    diff = float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0
    top = float(a[finite].abs().max()) if finite.any() else 0.0
    return diff, diff / top if top else (0.0 if diff == 0.0 else math.inf)


def summary(side: Side) -> str:
    if side.error is not None:
        return f"{side.did} ({side.error[:60]})"
    y = side.output
    nan = int(torch.isnan(y).sum())
    if nan == y.numel():
        return f"{side.did} -> all NaN"
    finite = y[~torch.isnan(y)]
    rms = float(finite.square().mean().sqrt())
    return f"{side.did} -> rms {rms:.3g}" + (f", {nan} NaN" if nan else "")


def known_input(in_features: int, amax: float, seed: int = 0) -> torch.Tensor:
    """[2, 7, in] values with this amax, exact zeros nowhere (each is one of ComfyUI's tokens)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 7, in_features, generator=g)
    x = x / x.abs().max() * amax
    return torch.where(x == 0, torch.full_like(x, 1e-3), x)


def run_case(comfy, case: Case, folder: Path, dtype: torch.dtype) -> tuple[Verdict, Side, Side]:
    path = case.path or folder / f"{abs(hash(case.name))}.safetensors"
    if case.path is None:
        write_checkpoint(str(path), case.tensors, case.metadata)
    x = known_input(case.in_features, case.amax)
    comfy_result = comfy_side(comfy, case, path, x.to(dtype))
    check_result = check_side(case, path, x.to(dtype).float())  # the same input values
    return judge(comfy_result, check_result, dtype == torch.bfloat16), comfy_result, check_result


def line(case: Case, verdict: Verdict, comfy: Side, check: Side) -> str:
    status = "PASS" if verdict.passed else ("NOTE" if case.noted else "FAIL")
    diffs = "" if math.isnan(verdict.abs_diff) else f" | max abs {verdict.abs_diff:.3g} rel {verdict.rel_diff:.3g}"
    db = f" | SQNR {sqnr_db(comfy.output, check.full):.2f} / {sqnr_db(check.output, check.full):.2f} dB"
    noted = f" | noted: {case.noted}" if status == "NOTE" else ""
    return f"{status}  {case.name:<58} | ComfyUI: {summary(comfy):<44} | check: {summary(check):<44}{diffs}{db}{noted}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp8stream-python", default=sys.executable,
                        help="the interpreter that runs `fp8stream calibrate` for our own outputs (the project's venv)")
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    parser.add_argument("--json", action="store_true", help="one JSON object per case instead of the lines")
    parser.add_argument("--bf16", action="store_true",
                        help="run ComfyUI in bfloat16, as on a GPU (its quantize then computes x * (1/s) in bfloat16, "
                        "which check does not model): the differences this makes, for information")
    args = parser.parse_args(argv)
    comfy = import_comfy()
    failed = noted = 0
    with tempfile.TemporaryDirectory(prefix="comfy_truth.") as tmp:
        folder = Path(tmp)
        cases = [c for c in synthetic_cases() + calibrated_cases(folder, _calibrator(args.fp8stream_python))
                 if args.only in c.name]
        for case in cases:
            verdict, comfy_result, check_result = run_case(comfy, case, folder,
                                                           torch.bfloat16 if args.bf16 else torch.float32)
            failed += not verdict.passed and not case.noted
            noted += not verdict.passed and bool(case.noted)
            if args.json:
                print(json.dumps({"case": case.name, "pass": verdict.passed, "comfyui": summary(comfy_result),
                                  "check": summary(check_result), "abs": _num(verdict.abs_diff),
                                  "rel": _num(verdict.rel_diff),
                                  "sqnr_db": {"comfyui": _num(sqnr_db(comfy_result.output, check_result.full)),
                                              "check": _num(sqnr_db(check_result.output, check_result.full))}}))
            else:
                print(line(case, verdict, comfy_result, check_result), flush=True)
    print(f"{len(cases)} cases: {failed} FAIL, {noted} NOTE (a difference known and not modelled: the case says which)")
    return 1 if failed else 0


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else x


def _calibrator(python: str):
    def calibrate(src: Path, dst: Path, *flags: str) -> None:
        r = subprocess.run([python, "-m", "fp8stream", "calibrate", str(src), str(dst), "--no-progress", "--force",
                            *flags], capture_output=True, text=True)
        if r.returncode not in (0, 5):
            raise SystemExit(f"calibrate {src.name} {' '.join(flags)}: exit {r.returncode}: {r.stderr[-2000:]}")
    return calibrate


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
