"""The head start (pipeline/head_start.py): the data copied into the output while the method
prepares, passed over by the writer after; the header's room; the synthetic files' data order."""

from __future__ import annotations

import io
import itertools
import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import small_model_tensors
from fp8stream.calibration import registry
from fp8stream.calibration.interface import MethodPlan, ModelView
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.formats.plan import build_plan
from fp8stream.io.header import OutputEntry, encode_header
from fp8stream.io.reader import LazyFile
from fp8stream.io.writer import StreamingWriter
from fp8stream.pipeline import head_start
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import write_checkpoint

KEPT = "blocks.0.mlp.2"
COPIED: list[tuple[int, int]] = []  # (bytes the head start copied, bytes the writer passed over)


class LateLayoutMethod:
    """Decides in prepare() to keep one layer weight-only, which changes its marker's size."""

    def prepare(self, model: ModelView) -> MethodPlan:
        return MethodPlan(weight_only={KEPT: "decided by the test's method"}, rows=False)

    def observe_weight(self, layer, rows, row_start: int) -> None: ...

    def weight_done(self, layer) -> None: ...

    def observe_tensor(self, info, chunk) -> None: ...

    def scales(self, model: ModelView, weight_scales):
        from fp8stream.calibration.interface import ScaleEstimate

        return {name: ScaleEstimate(0.5, "the test's constant") for name in weight_scales}

    def close(self) -> None: ...


def create(settings: CalibrationSettings) -> LateLayoutMethod:
    return LateLayoutMethod()


@pytest.fixture
def late_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.METHODS, "late-layout", registry.MethodEntry(__name__, "test method"))
    COPIED.clear()


def _finish_then_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head start copies all it can before it is stopped (deterministic: no race with prepare)."""
    original_agreed = head_start.agreed

    def stop(self: head_start.HeadStart) -> int:
        self._thread.join()
        return self.copied

    def agreed(before, after, copied: int) -> int:
        present = original_agreed(before, after, copied)
        COPIED.append((copied, present))
        return present

    monkeypatch.setattr(head_start.HeadStart, "stop", stop)
    monkeypatch.setattr(head_start, "agreed", agreed)


def _calibrate(src: Path, out: str, monkeypatch: pytest.MonkeyPatch, stdin: bytes | None = None) -> None:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(stdin)})())
    calibrate_file(RewriteOptions("-" if stdin is not None else str(src), out,
                                  settings=CalibrationSettings(method="late-layout")))


def test_the_data_is_copied_ahead_and_the_output_is_what_a_pipe_gives(tmp_path: Path, late_layout: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    _calibrate(src, str(tmp_path / "piped.safetensors"), monkeypatch, stdin=src.read_bytes())  # no head start
    assert COPIED == []
    _finish_then_stop(monkeypatch)
    _calibrate(src, str(tmp_path / "ahead.safetensors"), monkeypatch)
    with LazyFile(str(src)) as f:
        markers = [t for t in f.header.tensors if t.name.endswith(".comfy_quant")]
    # every byte before the first marker (markers come last) was copied ahead and passed over
    assert COPIED == [(markers[0].begin, markers[0].begin)] and markers[0].begin > 0
    out = (tmp_path / "ahead.safetensors").read_bytes()
    assert out == (tmp_path / "piped.safetensors").read_bytes()
    n = struct.unpack("<Q", out[:8])[0]
    doc = json.loads(out[8:8 + n])
    assert f"{KEPT}.input_scale" not in doc and "blocks.0.mlp.0.input_scale" in doc


@pytest.mark.parametrize("present", ["none", "one byte", "mid tensor", "all data"])
def test_the_writer_passes_over_the_bytes_present_and_writes_the_rest(tmp_path: Path, present: str) -> None:
    entries = [OutputEntry("a", "F32", (3,), 12), OutputEntry("b", "U8", (5,), 5), OutputEntry("c", "F32", (2,), 8)]
    data = {"a": bytes(range(12)), "b": b"\x10\x11\x12\x13\x14", "c": bytes(range(40, 48))}
    reference = io.BytesIO()
    writer = StreamingWriter(reference, entries, {"k": "v"}, room=200)
    writer.write_header()
    for e in entries:
        writer.write(e.name, data[e.name])
    want = reference.getvalue()
    header_len = len(encode_header(entries, {"k": "v"}, 200)[0])
    assert header_len >= 8 + 200 and json.loads(want[8:header_len])["__metadata__"] == {"k": "v"}
    n = {"none": 0, "one byte": 1, "mid tensor": 15, "all data": 25}[present]
    path = tmp_path / "out"
    path.write_bytes(want[:header_len + n] + b"\xee" * (len(want) - header_len - n))  # the rest: garbage
    with open(path, "r+b") as sink:
        writer = StreamingWriter(sink, entries, {"k": "v"}, room=200, present=n)
        writer.write_header()
        for e in entries:
            for i in range(0, e.nbytes, 4):  # chunks that straddle the boundary
                writer.write(e.name, data[e.name][i:i + 4])
        writer.finish()
    assert path.read_bytes() == want and writer.bytes_written == len(want)


def test_the_header_room_holds_any_choice_of_weight_only_layers(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    with LazyFile(str(src)) as f:
        header = f.header
    layers = ["blocks.0.attn.qkv", "blocks.0.mlp.0", "blocks.0.mlp.2"]
    rooms = set()
    for k in range(len(layers) + 1):
        for chosen in itertools.combinations(layers, k):
            plan = build_plan(header, {}, method_weight_only={name: "test" for name in chosen})
            natural = len(encode_header(plan.entries, plan.metadata)[0]) - 8
            assert natural <= plan.header_room
            rooms.add(plan.header_room)
    assert len(rooms) == 1  # the same room whatever is chosen: the data's place does not move


def test_synthetic_checkpoints_order_data_as_the_safetensors_library_does(tmp_path: Path) -> None:
    """Markers (U8) after every FP8 weight, scales (F32) first: the order real files have."""
    tensors = {"a.weight_scale": torch.ones(()), "a.weight": torch.zeros(4, dtype=torch.float8_e4m3fn),
               "a.comfy_quant": torch.zeros(3, dtype=torch.uint8), "b.weight": torch.zeros(4, dtype=torch.float8_e4m3fn),
               "c.bias": torch.zeros(2, dtype=torch.bfloat16), "d.ids": torch.zeros(2, dtype=torch.int64),
               "e.mask": torch.zeros(2, dtype=torch.bool), "f.w": torch.zeros(2, dtype=torch.float8_e5m2)}
    save_file(tensors, str(tmp_path / "lib.safetensors"))
    from fp8stream.synthetic.checkpoint import SyntheticTensor

    ours = [SyntheticTensor(name, dtype, tuple(t.shape), lambda t=t: [t.reshape(-1).view(torch.uint8).numpy().tobytes()])
            for (name, t), dtype in zip(tensors.items(), ["F32", "F8_E4M3", "U8", "F8_E4M3", "BF16", "I64", "BOOL", "F8_E5M2"])]
    write_checkpoint(str(tmp_path / "ours.safetensors"), ours)
    orders = []
    for name in ("lib", "ours"):
        with LazyFile(str(tmp_path / f"{name}.safetensors")) as f:
            orders.append([t.name for t in f.header.tensors])
    assert orders[0] == orders[1]
    assert orders[0].index("a.comfy_quant") > orders[0].index("b.weight")
