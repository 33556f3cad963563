"""Peak memory stays near one layer's size: a 1 GB checkpoint calibrates under 2 x largest tensor + 300 MB."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env
from fp8stream.io.header import read_header
from fp8stream.synthetic.checkpoint import (
    SyntheticTensor,
    comfy_fp8_linear,
    f32_scalar,
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


def _peak_kb(stderr: str) -> int:
    return int(stderr.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs /usr/bin/time")
def test_peak_rss_of_a_1gb_checkpoint_stays_under_the_bound(big_model: tuple[Path, int], tmp_path: Path) -> None:
    src, largest = big_model
    out = tmp_path / "out.safetensors"
    started = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "--device", "cpu",
                        "--json", str(src), str(out)], capture_output=True, text=True, env=subprocess_env())
    wall = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    peak_kb = _peak_kb(r.stderr)
    bound_kb = (2 * largest + 300 * MB) // 1024
    print(f"\npeak RSS {peak_kb / 1024:.0f} MiB (bound {bound_kb / 1024:.0f} MiB), wall {wall:.1f} s for "
          f"{src.stat().st_size / 1e9:.2f} GB")
    assert peak_kb < bound_kb
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


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs /usr/bin/time")
def test_peak_rss_with_a_1gb_stdin_stream_stays_under_the_bound(tmp_path: Path) -> None:
    """`cat big | fp8stream calibrate - - > out`: a real pipe in and out, the same bound as files."""
    src = tmp_path / "big.safetensors"
    largest = big_stream_checkpoint(src)
    assert src.stat().st_size >= 1_000_000_000
    out = tmp_path / "out.safetensors"
    command = (f"cat {shlex.quote(str(src))} | /usr/bin/time -f %M {shlex.quote(sys.executable)} -m fp8stream "
               f"calibrate --device cpu --json - - > {shlex.quote(str(out))}")
    started = time.monotonic()
    r = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=subprocess_env())
    wall = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    peak_kb = _peak_kb(r.stderr)
    bound_kb = (2 * largest + 300 * MB) // 1024
    report = json.loads(r.stderr.strip().splitlines()[-2])  # the JSON line went to stderr, before time's
    print(f"\nstdin: peak RSS {peak_kb / 1024:.0f} MiB (bound {bound_kb / 1024:.0f} MiB), wall {wall:.1f} s for "
          f"{src.stat().st_size / 1e9:.2f} GB")
    assert peak_kb < bound_kb
    assert out.stat().st_size == report["bytes_out"] > src.stat().st_size
    with open(out, "rb") as f:
        header = read_header(f, out.stat().st_size)
    assert sum(t.name.endswith(".input_scale") for t in header.tensors) == 3
