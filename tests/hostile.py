"""Hostile checkpoints for fuzzing: hypothesis strategies and the two fuzz targets.

Shared by the bounded tests in `tests/test_fuzz.py` and the long run of `scripts/fuzz.py`.
A target returns None when the input ended well (accepted, or refused with an FP8StreamError
and nothing left behind) and raises anything else.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile

from hypothesis import strategies as st

from fp8stream.errors import FP8StreamError, InvalidCheckpointError
from fp8stream.io.dtypes import DTYPE_BITS
from fp8stream.io.header import read_header
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.rewrite import RewriteOptions, calibrate_file

KNOWN_DTYPES = sorted(DTYPE_BITS)
ODD_STRINGS = ["", "\ud800", "a\x00b", "é" * 3, "__metadata__", "x" * 300, "F8_E4M3 ", "f32"]
ODD_NUMBERS = [-1, 0, 1, 2**31, 2**32 + 1, 2**63, 2**64, 2**64 + 8, -(2**63), 10**40]

names = st.one_of(st.sampled_from(["a", "b", "L.weight", "L.weight_scale", "L.comfy_quant", "L.input_scale"]),
                  st.sampled_from(ODD_STRINGS), st.text(max_size=8))
dtypes = st.one_of(st.sampled_from(KNOWN_DTYPES), st.sampled_from(ODD_STRINGS), st.integers(), st.none())
sizes = st.one_of(st.integers(0, 64), st.sampled_from(ODD_NUMBERS))
json_junk = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=4),
                      st.lists(st.integers(-2, 4), max_size=3))


@st.composite
def entries(draw) -> object:
    """A header entry: mostly well-formed, with any field possibly wrong."""
    entry: dict[str, object] = {
        "dtype": draw(dtypes),
        "shape": draw(st.one_of(st.lists(sizes, max_size=4), json_junk,
                                st.lists(st.integers(1, 2), min_size=33, max_size=40))),
        "data_offsets": draw(st.one_of(st.lists(sizes, min_size=2, max_size=2), st.lists(sizes, max_size=3),
                                       json_junk)),
    }
    if draw(st.integers(0, 9)) == 0:
        entry[draw(names)] = draw(json_junk)
    if draw(st.integers(0, 9)) == 0:
        del entry[draw(st.sampled_from(sorted(entry)))]
    return draw(st.one_of(st.just(entry), json_junk)) if draw(st.integers(0, 19)) == 0 else entry


@st.composite
def header_texts(draw) -> bytes:
    """Header JSON text: objects of entries, with duplicate keys, odd metadata, deep nesting, raw junk."""
    pairs = draw(st.lists(st.tuples(names, entries()), max_size=5))
    if pairs and draw(st.booleans()):
        pairs.append((pairs[0][0], pairs[0][1]))  # a duplicate key, which dict-based dumping would hide
    if draw(st.booleans()):
        junk_metadata = st.dictionaries(names, st.one_of(st.text(max_size=4), json_junk), max_size=3)
        pairs.insert(0, ("__metadata__", draw(st.one_of(junk_metadata, json_junk))))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        depth = draw(st.integers(100, 100_000))
        return ("[" * depth + "]" * depth).encode()
    if kind == 2:
        return text.encode("utf-8", "surrogatepass") + draw(st.binary(max_size=4))
    if kind == 3:
        return text.encode("utf-8", "surrogatepass")[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", "surrogatepass")


@st.composite
def header_blobs(draw) -> bytes:
    """A whole file: 8-byte length (true, or any number), header text, data bytes."""
    text = draw(header_texts())
    length = draw(st.one_of(st.just(len(text)), st.sampled_from([0, 1, 2**63, 2**64 - 1, 100_000_001, len(text) + 1]),
                            st.integers(0, len(text) + 64)))
    data = draw(st.binary(max_size=96))
    return struct.pack("<Q", length) + text + data


# --- checkpoints that look like ComfyUI FP8 files, with each part possibly wrong ---

GOOD_MARKERS = [b'{"format": "float8_e4m3fn"}', b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true}']
BAD_MARKERS = [
    b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true, "note": "\xc3\xa9\xc3\xa9\xc3\xa9"}',
    b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true, "x": 1e5}',
    b'{"format": "float8_e4m3fn", "format": "nvfp4"}', b'{"format": "nvfp4"}', b'[1, 2]', b'', b'\xff\xfe',
    b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true, "x": "\\ud800"}',
    b'{"format": "float8_e4m3fn", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]
f32_values = st.one_of(st.sampled_from([1.0, 0.0, -0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3e38]),
                       st.floats(width=32))
weight_bytes = st.one_of(st.sampled_from([b"\x00", b"\x80", b"\x7f", b"\xff", b"\x01", b"\x38"]),
                         st.binary(min_size=1, max_size=4))


def _usually(draw, good: st.SearchStrategy, bad: st.SearchStrategy, odds: int = 6):
    """A draw from `good`, or one time in `odds` from `bad`: most layers stay close to valid."""
    return draw(bad) if draw(st.integers(0, odds - 1)) == 0 else draw(good)


@st.composite
def comfy_tensors(draw) -> list[tuple[str, str, tuple[int, ...], bytes]]:
    """(name, dtype, shape, bytes) of 1-3 ComfyUI FP8 linears and some passthrough tensors."""
    out = []
    legacy_layers = 0
    for i in range(draw(st.integers(1, 3))):
        flavour = draw(st.sampled_from(["comfy", "comfy", "legacy", "plain"]))
        scale_names = {"comfy": ("weight_scale", "input_scale"), "legacy": ("scale_weight", "scale_input"),
                       "plain": (None, "input_scale")}[flavour]
        legacy_layers += flavour == "legacy"
        name = _usually(draw, st.just(f"blocks.{i}.lin"), st.sampled_from([f"l{i}", "x", "é\x00"]))
        rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 8))
        dtype = _usually(draw, st.just("F8_E4M3"), st.sampled_from(["F8_E5M2", "U8", "I8"]))
        shape = _usually(draw, st.just((rows, cols)),
                         st.sampled_from([(rows * cols,), (rows, cols, 1), (1, rows * cols)]))
        pattern = _usually(draw, st.binary(min_size=1, max_size=4), weight_bytes, odds=3)
        out.append((f"{name}.weight", dtype, shape, (pattern * (rows * cols))[: rows * cols]))
        if scale_names[0] and _usually(draw, st.just(True), st.just(False), odds=10):
            ws_dtype = _usually(draw, st.just("F32"), st.sampled_from(["BF16", "F64"]))
            ws_shape = _usually(draw, st.just(()), st.sampled_from([(1,), (2,), (1, 1)]))
            value = _usually(draw, st.floats(1e-4, 1.0), f32_values)
            out.append((f"{name}.{scale_names[0]}", ws_dtype, ws_shape, _values(value, ws_dtype, ws_shape)))
        if flavour == "comfy" and _usually(draw, st.just(True), st.just(False), odds=10):
            raw = _usually(draw, st.sampled_from(GOOD_MARKERS),
                           st.one_of(st.sampled_from(BAD_MARKERS), st.binary(max_size=48)))
            m_dtype = _usually(draw, st.just("U8"), st.sampled_from(["I8", "BOOL", "F8_E4M3"]), odds=10)
            out.append((f"{name}.comfy_quant", m_dtype, (len(raw),), raw))
        if draw(st.booleans()):
            is_dtype = _usually(draw, st.just("F32"), st.sampled_from(["BF16", "U16", "I64", "F8_E4M3", "BOOL", "F64"]))
            is_shape = _usually(draw, st.just(()), st.sampled_from([(1,), (2,), (0,), (3, 1)]))
            value = _usually(draw, st.floats(1e-4, 10.0), f32_values, odds=3)
            out.append((f"{name}.{scale_names[1]}", is_dtype, is_shape, _values(value, is_dtype, is_shape)))
    if legacy_layers and _usually(draw, st.just(True), st.just(False), odds=8):
        shape = _usually(draw, st.sampled_from([(0,), (2,)]), st.sampled_from([(1,), (3,), (2, 1)]))
        out.append((draw(st.sampled_from(["scaled_fp8", "model.diffusion_model.scaled_fp8"])), "F8_E4M3", shape,
                    bytes(shape[0] * (shape[1] if len(shape) > 1 else 1))))
    if draw(st.booleans()):
        out.append(("norm.weight", "BF16", (3,), bytes(6)))
    if draw(st.booleans()):
        out.append(("empty", "F32", (0, 4), b""))
    if draw(st.integers(0, 7)) == 0:
        out.append((draw(names), "U8", (2,), b"ab"))
    if draw(st.integers(0, 7)) == 0:
        out.append(("packed", "F4", (2, 3), b"\x12\x34\x56"))
    return out


def _values(value: float, dtype: str, shape: tuple[int, ...]) -> bytes:
    """`value` repeated to fill a tensor of dtype and shape (F32, F64, BF16 encode it; others get 0x3f bytes)."""
    n = 1
    for d in shape:
        n *= d
    f32 = struct.pack("<f", value)
    one = {"F32": f32, "F64": struct.pack("<d", value), "BF16": f32[2:]}.get(dtype)
    size = n * DTYPE_BITS[dtype] // 8
    return (one * n)[:size] if one else b"\x3f" * size


@st.composite
def checkpoints(draw) -> bytes:
    """A ComfyUI-like checkpoint, in a random data order, then possibly mutated byte by byte."""
    tensors = draw(comfy_tensors())
    tensors = list({t[0]: t for t in tensors}.values())  # names unique (duplicates: see header_texts)
    order = draw(st.permutations(range(len(tensors))))
    tensors = [tensors[i] for i in order]
    empty_quant_metadata = st.just({"_quantization_metadata": '{"format_version": "1.0", "layers": {}}'})
    metadata = _usually(draw, st.one_of(st.none(), empty_quant_metadata),
                        st.dictionaries(names, st.sampled_from(ODD_STRINGS), max_size=2), odds=10)
    doc: dict[str, object] = {} if metadata is None else {"__metadata__": metadata}
    position = 0
    for n, d, s, b in tensors:
        doc[n] = {"dtype": d, "shape": list(s), "data_offsets": [position, position + len(b)]}
        position += len(b)
    text = json.dumps(doc).encode()  # ASCII escapes, so lone surrogates get through to the reader
    blob = struct.pack("<Q", len(text)) + text
    data = bytearray(blob + b"".join(b for _, _, _, b in tensors))
    for _ in range(draw(st.integers(0, 3)) if draw(st.integers(0, 3)) == 0 else 0):
        where = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.integers(0, 3))
        if action == 0 and data:
            data[where] = draw(st.integers(0, 255))
        elif action == 1:
            del data[where:]
        elif action == 2:
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[where:where + 8] = struct.pack("<Q", draw(st.sampled_from(ODD_NUMBERS[1:8])) % 2**64)
    return bytes(data)


# --- the targets ---

def header_target(blob: bytes) -> None:
    """The validator accepts or raises InvalidCheckpointError; an accepted header is consistent."""
    try:
        header = read_header(io.BytesIO(blob), len(blob))
    except InvalidCheckpointError:
        return
    assert header.file_bytes == len(blob)
    for t in header.tensors:
        t.name.encode("utf-8")  # any name we accept can be written back


FAST_SETTINGS = CalibrationSettings(samples=4)


def options_for(blob: bytes, src: str, out: str) -> RewriteOptions:
    """Options varied by the bytes themselves (target flavour, weight-only flags, --verify)."""
    import zlib

    h = zlib.crc32(blob)
    return RewriteOptions(input=src, output=out, settings=FAST_SETTINGS, target=("auto", "comfy", "legacy")[h % 3],
                          keep_weight_only=bool(h >> 2 & 1), verify=bool(h >> 3 & 1))


def calibrate_target(blob: bytes, folder: str | None = None) -> None:
    """`calibrate` on the bytes: a scale file that verifies against the input, or an
    FP8StreamError, and no temp or partial output."""
    from fp8stream.verify import compare_files

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        with open(src, "wb") as f:
            f.write(blob)
        try:
            calibrate_file(options_for(blob, src, out))
        except FP8StreamError:
            assert sorted(os.listdir(tmp)) == ["in.safetensors"], os.listdir(tmp)
        else:
            comparison = compare_files(src, out)  # our own output passes our own verify
            assert comparison.ok, comparison.unexpected
            assert sorted(os.listdir(tmp)) == ["in.safetensors", "out.safetensors"]
        with open(src, "rb") as f:
            assert f.read() == blob  # the input is never modified


# --- crashes and truncation: shared by tests/test_robustness.py and scripts/{truncate,killtest}.py ---

def reference_checkpoint(path: str, layers: int = 4, shape: tuple[int, int] = (256, 512), seed: int = 0) -> None:
    """A ComfyUI FP8 checkpoint written by the safetensors library itself (its own data order)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for i in range(layers):
        w = torch.randn(*shape, generator=g) / shape[1] ** 0.5
        scale = float(w.abs().max()) / 448.0
        tensors[f"blocks.{i}.mlp.weight"] = (w / scale).to(torch.float8_e4m3fn)
        tensors[f"blocks.{i}.mlp.weight_scale"] = torch.tensor(scale, dtype=torch.float32)
        tensors[f"blocks.{i}.mlp.bias"] = torch.zeros(shape[0], dtype=torch.bfloat16)
        marker = json.dumps({"format": "float8_e4m3fn", "full_precision_matrix_mult": True}).encode()
        tensors[f"blocks.{i}.mlp.comfy_quant"] = torch.tensor(list(marker), dtype=torch.uint8)
        tensors[f"blocks.{i}.mlp.input_scale"] = torch.tensor(1.0, dtype=torch.float32)
    tensors["norm.weight"] = torch.ones(shape[1], dtype=torch.bfloat16)
    save_file(tensors, path, metadata={"modelspec.title": "reference"})


def file_digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def temps_in(folder: str) -> list[str]:
    """fp8stream temporary files in folder, live or stale."""
    from fp8stream.io.atomic import is_temp_name

    return [n for n in os.listdir(folder) if is_temp_name(n)]


def kill_calibrate(src: str, out: str, env: dict[str, str], delay_s: float | None, extra: tuple[str, ...] = ()) -> str:
    """Run `calibrate src out` and SIGKILL it: after delay_s, or (None) once its temp file holds data.

    Checks the promises and returns where the kill landed: 'before-temp', 'mid-write' or 'after-done'.
    """
    import signal
    import subprocess
    import sys
    import time

    folder = os.path.dirname(out)
    before = file_digest(src)
    proc = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", *extra, src, out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if delay_s is None:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            temps = temps_in(folder)
            if temps and os.path.getsize(os.path.join(folder, temps[0])) > 4096:
                break
            time.sleep(0.002)
    else:
        time.sleep(delay_s)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    code = proc.wait()
    assert file_digest(src) == before, "the input changed"
    from fp8stream.io.atomic import stale_temps

    temps = temps_in(folder)
    assert sorted(stale_temps(folder)) == sorted(temps), temps  # only dead runs' temps, recognisable by pid
    mine = [t for t in temps if t.endswith(f"-{proc.pid}.tmp")]
    if os.path.exists(out):
        # the rename is the last step: whatever is at OUT is complete and verified
        from fp8stream.verify import compare_files

        assert compare_files(src, out).ok
        return "after-done"
    assert code == -signal.SIGKILL, code
    return "mid-write" if mine else "before-temp"


def truncated_run(blob: bytes, cut: int, folder: str, env: dict[str, str]) -> str:
    """`calibrate` on the first `cut` bytes, in a child process: asserts a clean error, returns its line."""
    import subprocess
    import sys

    src, out = os.path.join(folder, f"cut{cut}.safetensors"), os.path.join(folder, f"out{cut}.safetensors")
    with open(src, "wb") as f:
        f.write(blob[:cut])
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", src, out],
                       capture_output=True, text=True, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("fp8stream: error:"), (
        cut, r.returncode, r.stderr)
    assert not os.path.exists(out) and not temps_in(folder), cut
    os.unlink(src)
    return lines[0]
