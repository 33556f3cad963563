"""Peak memory stays near one layer's size: a 1 GB checkpoint calibrates under 2 x largest tensor
+ 300 MB (the documented promise), and in fact within a few read chunks of what a tiny file of
the same layout takes: the stream never holds a whole tensor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import subprocess_env
from fp8stream.families.flux import flux_dev
from fp8stream.io.header import read_header
from fp8stream.memory import memory_estimate
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.synthetic.checkpoint import (
    SyntheticTensor,
    comfy_fp8_linear,
    f32_scalar,
    from_inventory,
    random_fp8_rows,
    write_checkpoint,
)

MB = 1 << 20


def big_checkpoint(path: Path, layers: int = 21, shape: tuple[int, int] = (8192, 6144)) -> int:
    tensors: list[SyntheticTensor] = []
    for i in range(layers):
        tensors += comfy_fp8_linear(f"blocks.{i}.mlp.0", shape, seed=i, input_scale=1.0)
    tensors.append(f32_scalar("scale_marker_free", 0.5))
    write_checkpoint(str(path), tensors)
    return shape[0] * shape[1]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    src = tmp_path_factory.mktemp("big") / "big.safetensors"
    largest = big_checkpoint(src)
    assert src.stat().st_size >= 1_000_000_000 and largest <= 64 * MB
    return src, largest


# The child's own peak (VmHWM of the process after exec, read at exit): /usr/bin/time needs no
# install this way, and wait4's ru_maxrss would count the forking test process's memory too.
PEAK = ("import atexit, runpy, sys\n"
        "def peak():\n"
        "    with open('/proc/self/status') as f:\n"
        "        kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))\n"
        "    sys.stderr.write(f'peak_kb={kb}\\n')\n"
        "atexit.register(peak)\n"
        "sys.argv[0] = 'fp8stream'\n"
        "runpy.run_module('fp8stream', run_name='__main__')\n")


def run_with_peak(args: list[str], stdin: Path | None = None, stdout: Path | None = None) -> tuple[int, str, int]:
    """`fp8stream ARGS` (stdin fed by `cat FILE` through a real pipe when given): exit code,
    stderr without the peak line, peak RSS in bytes."""
    cat = subprocess.Popen(["cat", str(stdin)], stdout=subprocess.PIPE) if stdin else None
    with open(stdout, "wb") if stdout else open("/dev/null", "wb") as sink:
        r = subprocess.run([sys.executable, "-c", PEAK, *args], stdin=cat.stdout if cat else None, stdout=sink,
                           stderr=subprocess.PIPE, text=True, env=subprocess_env())
    if cat:
        cat.stdout.close()
        assert cat.wait() == 0
    *rest, last = r.stderr.strip().splitlines()
    assert last.startswith("peak_kb="), r.stderr[-2000:]
    return r.returncode, "\n".join(rest), int(last.removeprefix("peak_kb=")) * 1024


def stream_bound(baseline: int, largest: int) -> int:
    """What the stream may add to a tiny file's run: reads go in 4 MB chunks, so half the
    largest tensor is a wide margin, and holding any whole tensor (largest bytes) breaks it."""
    return baseline + largest // 2


def test_peak_rss_of_a_1gb_checkpoint_stays_under_the_bound(big_model: tuple[Path, int], tmp_path: Path) -> None:
    src, largest = big_model
    tiny = tmp_path / "tiny.safetensors"
    big_checkpoint(tiny, shape=(64, 48))  # the same 21 layers, a few KB
    args = ["calibrate", "--method", "simulate", "--device", "cpu", "--json"]
    code, err, baseline = run_with_peak([*args, str(tiny), str(tmp_path / "tiny-out.safetensors")])
    assert code == 0, err
    out = tmp_path / "out.safetensors"
    started = time.monotonic()
    code, err, peak = run_with_peak([*args, str(src), str(out)])
    wall = time.monotonic() - started
    assert code == 0, err
    bound = stream_bound(baseline, largest)
    print(f"\npeak RSS {peak / MB:.0f} MiB (tiny file {baseline / MB:.0f} MiB, bound {bound / MB:.0f} MiB, "
          f"documented {(2 * largest + 300 * MB) / MB:.0f} MiB), wall {wall:.1f} s "
          f"for {src.stat().st_size / 1e9:.2f} GB")
    assert peak < bound
    assert out.stat().st_size > src.stat().st_size


def big_stream_checkpoint(path: Path, fp8_layers: int = 3, passthrough: int = 19,
                          shape: tuple[int, int] = (8192, 6144)) -> int:
    """1 GB whose bulk is passthrough BF16 of the same largest size: the stream's memory is what
    is measured, not the calibration maths (the file test above covers 21 FP8 layers)."""
    tensors: list[SyntheticTensor] = []
    for i in range(fp8_layers):
        tensors += comfy_fp8_linear(f"blocks.{i}.mlp.0", shape, seed=i, input_scale=1.0)
    half = (shape[0] // 2, shape[1])  # BF16: the same bytes as an FP8 weight of `shape`
    for i in range(passthrough):
        tensors.append(SyntheticTensor(f"blocks.{i}.norm.table", "BF16", half, random_fp8_rows(*shape, seed=100 + i)))
    write_checkpoint(str(path), tensors)
    return shape[0] * shape[1]


def test_peak_rss_with_a_1gb_stdin_stream_stays_under_the_bound(tmp_path: Path) -> None:
    """`cat big | fp8stream calibrate - - > out`: a real pipe in and out, the same bound as files."""
    tiny = tmp_path / "tiny.safetensors"
    big_stream_checkpoint(tiny, shape=(64, 48))
    code, err, baseline = run_with_peak(["calibrate", "--device", "cpu", "--json", "-", "-"], stdin=tiny,
                                        stdout=tmp_path / "tiny-out.safetensors")
    assert code == 0, err
    src = tmp_path / "big.safetensors"
    largest = big_stream_checkpoint(src)
    assert src.stat().st_size >= 1_000_000_000
    out = tmp_path / "out.safetensors"
    started = time.monotonic()
    code, err, peak = run_with_peak(["calibrate", "--device", "cpu", "--json", "-", "-"], stdin=src, stdout=out)
    wall = time.monotonic() - started
    assert code == 0, err
    bound = stream_bound(baseline, largest)
    report = json.loads(err.splitlines()[-1])  # the JSON line goes to stderr when stdout is the checkpoint
    print(f"\nstdin: peak RSS {peak / MB:.0f} MiB (tiny file {baseline / MB:.0f} MiB, bound {bound / MB:.0f} MiB), "
          f"wall {wall:.1f} s for {src.stat().st_size / 1e9:.2f} GB")
    assert peak < bound
    assert out.stat().st_size == report["bytes_out"] > src.stat().st_size
    with open(out, "rb") as f:
        header = read_header(f, out.stat().st_size)
    assert sum(t.name.endswith(".input_scale") for t in header.tensors) == 3


# The forward pass (the default) holds more than the stream: `memory_estimate`, what --jobs,
# --max-memory and zoo budget with, must cover its peak at the settings it is given.
SMALL_PASS = ["--forward-batch", "1", "--forward-tokens", "16", "--forward-text-tokens", "8"]


def flux_full_width(path: Path) -> None:
    """Flux-dev at full width (3072), one double and one single block (610 MB): its largest
    layers, single_blocks.0.linear1 (21504 x 3072, the default's largest weight) and linear2."""
    specs = [s for s in flux_dev(1) if not s.name.startswith("single_blocks.1.")]
    write_checkpoint(str(path), from_inventory(specs))


def check_estimate_covers_the_peak(src: Path, args: list[str], settings: CalibrationSettings, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, err, peak = run_with_peak(["calibrate", "--device", "cpu", "--json", *args, str(src),
                                     str(tmp_path / "out.safetensors")], stdout=report)
    assert code == 0, err
    assert json.loads(report.read_text())["notes"] == []  # the forward pass ran (no fallback to the bound)
    estimate = memory_estimate(str(src), None, settings)
    print(f"\n{src.name}: peak RSS {peak / MB:.0f} MiB, estimate {estimate / MB:.0f} MiB")
    assert peak <= estimate < 2 * peak  # covers it, and is not a figure so large it would idle --jobs


def test_the_estimate_covers_the_defaults_peak_on_a_tiny_model(tmp_path: Path) -> None:
    """The default on a tiny Flux: the imports (torch, diffusers, the model's code) are its peak."""
    src = ft.comfy_file("flux", tmp_path)
    check_estimate_covers_the_peak(src, [], CalibrationSettings(device="cpu"), tmp_path)


def test_the_estimate_covers_the_defaults_peak_at_full_width(tmp_path: Path) -> None:
    """Full-width Flux layers: one weight as float32, the read-ahead, the bytes being decoded
    (a short pass keeps the test cheap: the estimate follows the settings it is given)."""
    src = tmp_path / "flux-1.safetensors"
    flux_full_width(src)
    settings = CalibrationSettings(device="cpu", forward_batch=1, forward_tokens=16, forward_text_tokens=8)
    check_estimate_covers_the_peak(src, SMALL_PASS, settings, tmp_path)
