"""Issue 24's one read and plain copy, by their mechanism (CI cannot drop caches: the bar itself is
scripts/read_once.py's). A file IN to a file OUT, on any device: every byte of an FP8 weight is
read once, by the forward pass or by the copy, never by both; bytes that pass through unchanged go
by the kernel (`copy_file_range`), or by chunks where it refuses; the output is the stream's
bytes. Which runs do this is decided from the input and the output (`copy_shares_reads`), declared
to the method (`ModelView.copy_takes_reads`), and not from the device: CI has no GPU, so the GPU's
choice (`forward_method.beside_the_copy` true) is forced here on the CPU."""

from __future__ import annotations

import collections
import errno
import json
import os
import threading
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it)
import pytest
import torch

import forward_tiny as ft  # noqa: E402
from conftest import run_cli  # noqa: E402
from fp8stream.formats.layers import take_inventory  # noqa: E402
from fp8stream.io import overlap, placed  # noqa: E402
from fp8stream.io.compression import ZstdSettings  # noqa: E402
from fp8stream.io.reader import LazyFile  # noqa: E402
from fp8stream.io.storage import locate  # noqa: E402
from fp8stream.methods.forward import forward_method, forward_pass  # noqa: E402
from fp8stream.methods.interface import ModelView  # noqa: E402
from fp8stream.methods.settings import CalibrationSettings  # noqa: E402
from fp8stream.pipeline.inputs import open_model  # noqa: E402
from fp8stream.pipeline.outputs import OutputTarget  # noqa: E402
from fp8stream.pipeline.placed_run import copy_shares_reads  # noqa: E402

FORWARD = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
           "--no-progress"]
OUTSIDE = "model.diffusion_model.extra_head"  # an FP8 linear no Linear of the model code reads


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    """The tiny Flux as ComfyUI ships it, plus one FP8 layer outside the model code holding a NaN
    (the pass never reads it: the copy must read, check and place it)."""
    path = tmp_path_factory.mktemp("in") / "flux.safetensors"
    _, state, _ = ft.tiny("flux")
    state = {"model.diffusion_model." + k: v for k, v in state.items()}
    layers = [n for n in ft.fp8_linears(state)]
    extra = torch.randn(16, 32) * 0.1
    extra[3, 5] = float("nan")
    state[OUTSIDE + ".weight"] = extra
    ft.qm.write_fp8_checkpoint(state, layers + [OUTSIDE], path)
    return path


class Reads:
    """Bytes of one input file read, per tensor: by positioned reads, kernel copies and the
    stream's sequential reads (every way fp8stream reads a file)."""

    def __init__(self, path: Path, monkeypatch) -> None:
        with LazyFile(str(path)) as f:
            self.header = f.header
        self.path = str(path.resolve())
        self.by_tensor: collections.Counter = collections.Counter()
        self.copied = 0  # of them by the kernel
        self.head_start: collections.Counter = collections.Counter()  # copied by the head start's thread
        self.last_read: tuple[int, int] = (0, 0)  # the input's span the latest positioned read read
        self.recopied = 0  # bytes the kernel copied of that span: from the page cache, not read again
        preadv, pread, copy = os.preadv, os.pread, getattr(os, "copy_file_range", None)
        monkeypatch.setattr(os, "preadv", lambda fd, bufs, off, *a: self._note(fd, off, preadv(fd, bufs, off, *a)))
        monkeypatch.setattr(os, "pread", lambda fd, n, off: self._note_bytes(fd, off, pread(fd, n, off)))
        if copy is not None:
            monkeypatch.setattr(placed, "_KERNEL_COPY", lambda i, o, n, oi, oo: self._note(i, oi, copy(i, o, n, oi, oo),
                                                                                          kernel=True))
        reader_init = overlap.ChunkReader.__init__

        def counted_reader(reader, stream, *a, **k):
            reader_init(reader, _Sequential(stream, self), *a, **k)
        monkeypatch.setattr(overlap.ChunkReader, "__init__", counted_reader)

    def _note_bytes(self, fd: int, offset: int, data: bytes) -> bytes:
        self._note(fd, offset, len(data))
        return data

    def _note(self, fd: int, offset: int, n: int, kernel: bool = False) -> int:
        try:
            if os.path.realpath(f"/proc/self/fd/{fd}") != self.path:
                return n
        except OSError:
            return n
        if kernel and threading.current_thread().name == "fp8stream head start":
            self._count(self.head_start, offset, n)
            return n
        if kernel and self.last_read[0] <= offset and offset + n <= self.last_read[1]:
            self.recopied += n  # placing rows just read (checked, summed) by the kernel, not by a write
            return n
        if not kernel:
            self.last_read = (offset, offset + n)
        counted = self._count(self.by_tensor, offset, n)
        self.copied += counted if kernel else 0
        return n

    def _count(self, counter: collections.Counter, offset: int, n: int) -> int:
        """Bytes [offset, offset + n) of the file, counted per tensor; returns the data bytes."""
        total = 0
        for t in self.header.tensors:
            start, end = self.header.data_start + t.begin, self.header.data_start + t.end
            total += max(0, min(end, offset + n) - max(start, offset))
            counter[t.name] += max(0, min(end, offset + n) - max(start, offset))
        return total


class _Sequential:
    """The stream's file object, its reads noted at the position they start."""

    def __init__(self, stream, reads: Reads) -> None:
        self._stream, self._reads = stream, reads

    def readinto(self, buf) -> int:
        where = self._stream.tell()
        n = self._stream.readinto(buf)
        self._reads._note(self._stream.fileno(), where, n or 0)
        return n

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@pytest.mark.parametrize("gpu,head_start", [(False, True), (False, False), (True, True)],
                         ids=["cpu", "cpu-cache-too-small", "as-on-a-gpu"])
def test_each_fp8_weight_byte_is_read_once_and_the_rest_goes_by_the_kernel(flux, tmp_path, monkeypatch, gpu,
                                                                          head_start):
    """On the CPU and as on a GPU (whose pass runs beside a copy that streams): the pass runs
    before the copy, on the main thread, and the copy takes its bytes from the pass's reads.
    Where the page cache holds IN, the head start has copied every byte by the kernel before the
    method existed (IN read from the disk then), and the run reads each FP8 byte once more, from
    the cache; where it cannot, there is no head start."""
    monkeypatch.setattr(forward_method, "beside_the_copy", lambda settings: gpu)
    if not head_start:
        monkeypatch.setattr("fp8stream.pipeline.head_start.cache_holds", lambda *args: False)
    threads, real_run = [], forward_pass.run
    monkeypatch.setattr(forward_pass, "run", lambda *a, **k: threads.append(threading.current_thread())
                        or real_run(*a, **k))
    reads = Reads(flux, monkeypatch)
    out = tmp_path / "out.safetensors"
    result = run_cli("calibrate", flux, out, "--json", "--assume-input-rms", "1", *FORWARD)  # OUTSIDE: the bound
    assert result.exit_code == 0, result.output[-2000:]
    assert threads == [threading.main_thread()]  # read_weights, not the pass beside the copy
    fp8 = [t for t in reads.header.tensors if t.dtype == "F8_E4M3"]
    assert len(fp8) > 10 and OUTSIDE + ".weight" in {t.name for t in fp8}
    twice = {t.name: reads.by_tensor[t.name] for t in fp8 if reads.by_tensor[t.name] != t.nbytes}
    assert twice == {}  # neither read twice (the pass, then the copy) nor left unread
    unread = [t.name for t in reads.header.tensors if reads.by_tensor[t.name] + reads.head_start[t.name] < t.nbytes]
    assert unread == []
    # each FP8 byte copied once by the head start (or not at all without one), before the run read it once
    assert {t.name for t in fp8 if reads.head_start[t.name] != (t.nbytes if head_start else 0)} == set()
    # what is read twice is what the bound watches and the pass loads (biases: F32 here): small
    small = sum(t.nbytes for t in reads.header.tensors if t.dtype != "F8_E4M3")
    assert sum(reads.by_tensor.values()) <= reads.header.data_bytes + small
    report = json.loads(result.stdout)
    outside = next(layer for layer in report["layers"] if layer["name"] == OUTSIDE)
    assert "NaN" in json.dumps(outside)  # checked though the pass never read it
    # the rows the copy reads itself (checked, summed) are placed by the kernel from the page cache
    # (with the head start, they were placed before: the loop reads them for the checks and sums only)
    assert reads.recopied >= (0 if head_start else next(t.nbytes for t in fp8 if t.name == OUTSIDE + ".weight"))


def _calibrate(flux: Path, out: Path, *extra: str) -> bytes:
    result = run_cli("calibrate", flux, out, *FORWARD, *extra)
    assert result.exit_code == 0, result.output[-2000:]
    return out.read_bytes()


def test_the_output_is_the_streams_bytes_with_or_without_the_kernels_copy(flux, tmp_path, monkeypatch):
    """Written at fixed places (kernel copy, or chunks where the kernel refuses) or front to
    back (--verify keeps the stream): the same bytes."""
    placed_bytes = _calibrate(flux, tmp_path / "placed.safetensors")
    streamed = _calibrate(flux, tmp_path / "streamed.safetensors", "--verify")
    assert placed_bytes == streamed

    def refused(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(placed, "_KERNEL_COPY", refused)
    assert _calibrate(flux, tmp_path / "chunks.safetensors") == streamed


def test_a_tensor_left_short_fails_loudly(tmp_path):
    from fp8stream.io.header import OutputEntry

    with open(tmp_path / "o", "wb") as f:
        writer = placed.PlacedWriter(f.fileno(), [OutputEntry("a", "U8", (4,), 4), OutputEntry("b", "U8", (2,), 2)],
                                     None)
        writer.write_header()
        writer.write_at("b", 0, b"xy")
        writer.write_at("a", 2, b"cd")
        with pytest.raises(RuntimeError, match="'a' not written"):
            writer.finish()
        with pytest.raises(RuntimeError, match="too many bytes|no place"):
            writer.write_at("b", 1, b"zz")
        writer.write_at("a", 0, b"ab")
        writer.finish()
    assert (tmp_path / "o").read_bytes()[-6:] == b"abcdxy"


def _bound_scales(flux: Path, order) -> dict[str, float]:
    """The bound's scales with each layer's weight rows shown in blocks of 5 rows, in `order`."""
    import numpy as np

    from fp8stream.formats.layers import take_inventory
    from fp8stream.io.source import TensorSource
    from fp8stream.methods.interface import ModelView
    from fp8stream.methods.settings import CalibrationSettings
    from fp8stream.methods.simulate.simulate_method import WeightAwareMethod

    with LazyFile(str(flux)) as f:
        header = f.header
    layers = take_inventory(header).layers
    method = WeightAwareMethod(CalibrationSettings(method="simulate", sim_mode="bound", rule="max"))
    with TensorSource.for_file(str(flux), header) as source:
        view = ModelView(header, layers, source)
        plan = method.prepare(view)
        for info in header.tensors:
            if info.name in plan.watches:
                method.observe_tensor(info, bytearray(source.get(info.name)))
        for layer in layers:
            rows = layer.weight.shape[0]
            for a in order(range(0, rows, 5)):
                b = min(rows, a + 5)
                data = np.frombuffer(source.read_rows(layer.weight.name, a, b), dtype=np.uint8)
                method.observe_weight(layer, data.reshape(b - a, -1), a)
            method.weight_done(layer)
        return {n: e.scale for n, e in method.scales(view, {layer.name: 1.0 for layer in layers}).items()}


def test_the_bound_takes_a_weights_row_blocks_in_any_order(flux):
    """The copy shows the bound each weight's rows as the forward pass reads them (a fused
    weight's parts in the model's order, not the file's): the scales are those of row order."""
    in_order = _bound_scales(flux, list)
    assert _bound_scales(flux, lambda starts: list(starts)[::-1]) == in_order


OUTPUTS = {  # each kind of OUT -> (OUT, compressed, --verify, whether the copy takes the pass's reads)
    "file": ("out.safetensors", False, False, True),
    "stdout": ("-", False, False, False),
    "verify": ("out.safetensors", False, True, False),
    "zstd": ("out.safetensors.zst", True, False, False),
}


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "as-on-a-gpu"])
@pytest.mark.parametrize("kind", sorted(OUTPUTS))
def test_the_copy_takes_the_pass_reads_where_in_and_out_are_files_on_any_device(flux, tmp_path, monkeypatch, kind,
                                                                                gpu):
    """The choice, made from the declared facts: a file OUT is written at fixed places and the
    pass runs first (read_weights), on any device; stdout, zstd and --verify stream, with the
    pass beside the copy where beside_the_copy says so (a GPU), else after it (scales)."""
    out, compressed, verify, takes = OUTPUTS[kind]
    target = OutputTarget(locate(out if out == "-" else str(tmp_path / out)), False,
                          ZstdSettings() if compressed else None)
    started = []
    monkeypatch.setattr(forward_method, "beside_the_copy", lambda settings: gpu)
    monkeypatch.setattr(forward_method, "BesideTheCopy", lambda work: started.append(work) or "the pass beside")
    with open_model(locate(str(flux))) as model:
        assert copy_shares_reads(model, target, verify) is takes
        view = ModelView(model.whole, take_inventory(model.whole).layers, model.tensor_source(),
                         copy_takes_reads=takes)
        method = forward_method.ForwardMethod(CalibrationSettings(method="forward", assume_input_rms=1.0))
        try:
            plan = method.prepare(view)
        finally:
            view.source.close()
    assert (plan.read_weights is not None) is takes
    assert (method.beside is not None) is (gpu and not takes) and len(started) == (gpu and not takes)


def test_verify_says_what_it_read_beyond_a_plain_run(flux, tmp_path):
    """--verify keeps the stream: IN hashed as it is read, the pass's reads by name a second read
    of its weights, and OUT read back whole. The report says so in a note and --json in bytes;
    a plain run says nothing of it."""
    from fp8stream.report import human_size

    args = ("--json", "--assume-input-rms", "1", *FORWARD)
    plain = run_cli("calibrate", flux, tmp_path / "plain.safetensors", *args)
    out = tmp_path / "verified.safetensors"
    verified = run_cli("calibrate", flux, out, "--verify", *args)
    assert plain.exit_code == 0 and verified.exit_code == 0, verified.output[-2000:]
    p, v = json.loads(plain.stdout), json.loads(verified.stdout)
    assert p["verify_read_bytes"] is None and not [n for n in p["notes"] if "--verify" in n]
    with LazyFile(str(flux)) as f:
        header = f.header
    weights = sum(t.nbytes for t in header.tensors if t.dtype == "F8_E4M3" and not t.name.startswith(OUTSIDE))
    again = v["verify_read_bytes"] - out.stat().st_size  # what the pass read of IN a second time
    assert weights <= again <= header.data_bytes
    (note,) = [n for n in v["notes"] if n.startswith("--verify read")]
    assert human_size(v["verify_read_bytes"]) in note and "OUT read back whole" in note


@pytest.fixture(scope="module")
def flux_zero_weight(tmp_path_factory) -> tuple[Path, str]:
    """The tiny Flux with one FP8 weight the pass reads all zero (a warning its checks must give)."""
    path = tmp_path_factory.mktemp("in") / "flux-zero.safetensors"
    _, state, _ = ft.tiny("flux")
    state = {"model.diffusion_model." + k: v for k, v in state.items()}
    layers = list(ft.fp8_linears(state))
    zeroed = next(n for n in layers if "double_blocks.0.img_attn.proj" in n)
    state[zeroed + ".weight"] = torch.zeros_like(state[zeroed + ".weight"])
    ft.qm.write_fp8_checkpoint(state, layers, path)
    return path, zeroed


def test_rows_the_pass_holds_on_a_gpu_are_checked_and_shown_from_there(flux_zero_weight, tmp_path, monkeypatch):
    """On a GPU the read-ahead copies each weight's bytes there once and the pass holds them as a
    tensor: the copy checks them and shows them to the bound from that tensor (no copy of its
    own, nothing read again), and writes what the host's bytes give: the same warnings, the same
    bytes but for the scales' last bits (the row sums in torch, not numpy). Forced on the CPU: a
    CPU tensor stands in for the device's."""
    from fp8stream.methods.forward import prefetch
    from fp8stream.pipeline import loop, placed_run

    flux, zeroed = flux_zero_weight
    args = ("--json", "--assume-input-rms", "1", *FORWARD)
    host = run_cli("calibrate", flux, tmp_path / "host.safetensors", *args)
    assert host.exit_code == 0, host.output[-2000:]
    real_load, real_show, shown = prefetch.Prefetcher._load, loop.Feed.show, []

    def load_to_device(self, runs):
        return [prefetch.Loaded(device_bytes=torch.frombuffer(p.raw, dtype=torch.uint8)) if p.raw else p
                for p in real_load(self, runs)]

    def show(self, layer, rows, row, checks):
        shown.append(isinstance(rows, torch.Tensor))
        real_show(self, layer, rows, row, checks)
    monkeypatch.setattr(prefetch.Prefetcher, "_load", load_to_device)
    monkeypatch.setattr(loop.Feed, "show", show)
    monkeypatch.setattr(placed_run, "shows_as_read", lambda device: False)  # as on a GPU
    reads = Reads(flux, monkeypatch)
    device = run_cli("calibrate", flux, tmp_path / "device.safetensors", *args)
    assert device.exit_code == 0, device.output[-2000:]
    assert shown.count(True) > 10 and shown.count(False) == 0  # every FP8 weight from the pass's tensors
    fp8 = [t for t in reads.header.tensors if t.dtype == "F8_E4M3"]
    assert {t.name: reads.by_tensor[t.name] for t in fp8 if reads.by_tensor[t.name] != t.nbytes} == {}
    h, d = json.loads(host.stdout)["layers"], json.loads(device.stdout)["layers"]
    assert [(x["name"], x["warnings"]) for x in h] == [(x["name"], x["warnings"]) for x in d]
    assert any("all zero" in json.dumps(x["warnings"]) for x in d if x["name"] == zeroed)
    assert [x["scale"] for x in d] == pytest.approx([x["scale"] for x in h], rel=1e-6)
    host_out, device_out = (tmp_path / "host.safetensors").read_bytes(), (tmp_path / "device.safetensors").read_bytes()
    header = _header_of(tmp_path / "device.safetensors")
    assert header == _header_of(tmp_path / "host.safetensors")
    for t in header.tensors:
        if not t.name.endswith(".input_scale"):
            at = slice(header.data_start + t.begin, header.data_start + t.end)
            assert device_out[at] == host_out[at], t.name


def _header_of(path: Path):
    with LazyFile(str(path)) as f:
        return f.header
