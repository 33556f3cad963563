"""Issue 24's layout from the header and its head start: the data's places in the output do not
depend on what the method keeps weight-only, so where IN and OUT are local files the copy of
everything that passes through begins before the method exists (before torch is imported), and
the checks and the bound's row sums still see each FP8 weight row once."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import run_cli
from fp8stream.formats import comfy_quant
from fp8stream.formats.plan import build_plan
from fp8stream.io import placed
from fp8stream.io.reader import LazyFile
from fp8stream.methods.interface import MethodPlan

SIMULATE = ["--method", "simulate", "--device", "cpu", "--no-progress"]
FORWARD = ["--device", "cpu", "--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8",
           "--forward-threads", "1", "--no-progress"]
NAN_LAYER = "model.diffusion_model.extra_head"  # an FP8 linear no Linear of the model code reads, with a NaN
HEAD_START = "fp8stream head start"


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    """The tiny Flux as ComfyUI ships it (comfy markers), plus an FP8 layer holding a NaN."""
    import torch

    path = tmp_path_factory.mktemp("in") / "flux.safetensors"
    _, state, _ = ft.tiny("flux")
    state = {"model.diffusion_model." + k: v for k, v in state.items()}
    layers = list(ft.fp8_linears(state))
    extra = torch.randn(16, 32) * 0.1
    extra[3, 5] = float("nan")
    state[NAN_LAYER + ".weight"] = extra
    ft.qm.write_fp8_checkpoint(state, layers + [NAN_LAYER], path)
    return path


def _header(path: Path):
    with LazyFile(str(path)) as f:
        return f.header


def _choosing(monkeypatch, weight_only: dict[str, str], scaled: dict[str, str]) -> None:
    """The bound keeps these layers weight-only, as the forward pass would choose (no option
    changes: the header's recorded settings stay the same)."""
    from fp8stream.methods.simulate.simulate_method import WeightAwareMethod

    prepare = WeightAwareMethod.prepare

    def choosing(self, model):
        plan = prepare(self, model)
        return MethodPlan(weight_only=weight_only, scaled_weight_only=scaled, watches=plan.watches, rows=plan.rows,
                          notes=plan.notes)
    monkeypatch.setattr(WeightAwareMethod, "prepare", choosing)


def _layers(path: Path) -> list[str]:
    from fp8stream.formats.layers import take_inventory

    return [layer.name for layer in take_inventory(_header(path)).layers]


def test_the_data_layout_is_the_same_whatever_the_method_keeps_weight_only(flux, tmp_path, monkeypatch):
    plain = tmp_path / "none.safetensors"
    assert run_cli("calibrate", flux, plain, *SIMULATE).exit_code == 0
    layers = _layers(flux)
    _choosing(monkeypatch, {n: "measured" for n in layers[::2]}, {n: "measured" for n in layers[1:6:2]})
    chosen = tmp_path / "chosen.safetensors"
    result = run_cli("calibrate", flux, chosen, *SIMULATE, "--json")
    assert result.exit_code == 0, result.output[-2000:]
    assert len(json.loads(result.stdout)["excluded"]) == len(layers[::2])  # the choice was made
    a, b = _header(plain), _header(chosen)
    assert a.header_bytes == b.header_bytes  # the header's room: the same
    inputs = {t.name for t in _header(flux).tensors}
    places = [{t.name: (t.begin, t.end) for t in h.tensors if t.name in inputs} for h in (a, b)]
    assert places[0] == places[1]  # every input tensor where it was, markers included
    flagged = set(layers[::2]) | set(layers[1:6:2])
    markers = b.by_name
    with LazyFile(str(chosen)) as f:
        docs = {n: comfy_quant.parse_marker(bytes(f.read(markers[n + ".comfy_quant"])))
                for n in layers if n + ".comfy_quant" in markers}
    assert {n for n, doc in docs.items() if comfy_quant.is_weight_only(doc)} == flagged


def test_the_head_start_copies_before_the_method_is_created(flux, tmp_path, monkeypatch):
    from fp8stream.methods import interface
    from fp8stream.pipeline.head_start import HeadStart

    create, seen, started = interface.create, {}, []
    init = HeadStart.__init__

    def noted(self, *args):
        init(self, *args)
        started.append(self)
    monkeypatch.setattr(HeadStart, "__init__", noted)

    def create_after_the_copy(settings):
        assert len(started) == 1, "no head start when the method is created"
        started[0].join()
        temp = list(tmp_path.glob(".out.safetensors.fp8stream-*.tmp"))
        seen["bytes"] = temp[0].read_bytes()
        return create(settings)
    monkeypatch.setattr(interface, "create", create_after_the_copy)
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", flux, out, *SIMULATE).exit_code == 0
    written, header, inputs = out.read_bytes(), _header(out), _header(flux).by_name
    passing = [t for t in header.tensors if t.name in inputs and t.dtype != "U8" and t.shape != ()]
    assert len([t for t in passing if t.dtype == "F8_E4M3"]) > 10
    for t in passing:  # FP8 weights and BF16/F32 tensors: in place before the method existed
        at = slice(header.data_start + t.begin, header.data_start + t.end)
        assert seen["bytes"][at] == written[at], t.name


@pytest.mark.parametrize("method", [SIMULATE, FORWARD])
def test_the_same_bytes_with_or_without_the_head_start(flux, tmp_path, monkeypatch, method):
    """Every FP8 row checked and shown to the method once either way (the bound's row sums, the
    forward pass's reads): the same scales, the same file, and the NaN the copy placed still found."""
    def run(name: str) -> tuple[bytes, dict]:
        out = tmp_path / name
        result = run_cli("calibrate", flux, out, *method, "--json", "--assume-input-rms", "1")
        assert result.exit_code == 0, result.output[-2000:]
        return out.read_bytes(), json.loads(result.stdout)

    started = []
    monkeypatch.setattr("fp8stream.pipeline.head_start.HeadStart.join", _noted(started))
    with_head, report = run("with.safetensors")
    assert started  # it ran
    nan = next(layer for layer in report["layers"] if layer["name"] == NAN_LAYER)
    assert "NaN" in json.dumps(nan)
    monkeypatch.setattr("fp8stream.pipeline.head_start.cache_holds", lambda *args: False)
    without, _ = run("without.safetensors")
    assert with_head == without
    assert len(started) == 1


def _noted(calls: list):
    from fp8stream.pipeline.head_start import HeadStart

    join = HeadStart.join

    def noted(self):
        calls.append(self)
        join(self)
    return noted


def test_a_failing_head_start_leaves_nothing_and_says_so_in_one_line(flux, tmp_path, monkeypatch):
    copy = placed._KERNEL_COPY

    def full_disk(*args):
        if threading.current_thread().name == HEAD_START:
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(*args)
    monkeypatch.setattr(placed, "_KERNEL_COPY", full_disk)
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", flux, out, *SIMULATE)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "disk full" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_which_files_get_their_data_places_before_the_method(tmp_path):
    """A comfy file, a plain one, and a legacy one converted to comfy, yes; a legacy scaled_fp8
    file keeping its marker in the data (its size is the whole file's weight-only flag), no."""
    from architectures import build_model
    from fp8stream.formats.plan_types import FormatOptions
    from fp8stream.synthetic.checkpoint import write_checkpoint

    fixed = {}
    for flavour, target in (("comfy", "auto"), ("plain", "auto"), ("legacy", "comfy"), ("legacy", "auto")):
        src = tmp_path / f"{flavour}.safetensors"
        write_checkpoint(str(src), build_model("flux", flavour))
        fixed[flavour, target] = build_plan(_header(src), {}, FormatOptions(target=target)).data_fixed
    assert fixed == {("comfy", "auto"): True, ("plain", "auto"): True, ("legacy", "comfy"): True,
                     ("legacy", "auto"): False}


def test_the_head_start_sends_what_it_copies_to_the_disk_as_it_goes(flux, tmp_path, monkeypatch):
    """The head start's copy is handed to the kernel's writeback as it goes (not left for the
    final fsync): each time WRITEBACK_BYTES more are copied, its thread asks for the next range at
    once, front to back, each range ending on a page boundary (a page partly empty would be
    dirtied again). The bar (the fsync's time) needs dropped caches; this is the mechanism."""
    import mmap

    from fp8stream.io import writeback

    events: list[tuple[str, int, int]] = []  # ("copy" or "writeback", output offset, bytes), by the head start
    kernel_copy = placed._KERNEL_COPY

    def copy(in_fd: int, out_fd: int, n: int, in_offset: int, out_offset: int) -> int:
        done = kernel_copy(in_fd, out_fd, n, in_offset, out_offset)
        if threading.current_thread().name == HEAD_START:
            events.append(("copy", out_offset, done))
        return done

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        if threading.current_thread().name == HEAD_START and nbytes:
            events.append(("writeback", offset, nbytes))
        return 0
    step = 3 * mmap.PAGESIZE
    monkeypatch.setattr(placed, "_KERNEL_COPY", copy)
    monkeypatch.setattr(writeback, "_sync_file_range", lambda: record)
    monkeypatch.setattr(writeback, "WRITEBACK_BYTES", step)
    monkeypatch.setattr(placed, "COPY_STEP", 1000)
    monkeypatch.setattr("fp8stream.pipeline.head_start.COPY_STEP", 1000)
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", flux, out, *SIMULATE).exit_code == 0
    asked, requests, filled = 0, 0, 0  # bytes [0, asked) asked for; the latest copy ends at filled
    for kind, at, n in events + [("copy", 0, 0)]:
        if kind == "writeback":
            assert at == asked and (at + n) % mmap.PAGESIZE == 0 and n >= step  # the next range, whole pages
            asked, requests = at + n, requests + 1
        else:  # before the next copy, the range due after the previous one was asked for
            assert filled - filled % mmap.PAGESIZE - asked < step
            filled = at + n
    copied = sum(n for kind, _, n in events if kind == "copy")
    assert copied > 5 * step and requests >= copied // step // 2
