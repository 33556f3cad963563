"""Peak memory stays near one layer's size: a 1 GB checkpoint calibrates under 2 x largest tensor + 300 MB."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fp8stream.synthetic.checkpoint import SyntheticTensor, comfy_fp8_linear, f32_scalar, write_checkpoint

MB = 1 << 20


def big_checkpoint(path: Path, layers: int = 21, shape: tuple[int, int] = (8192, 6144)) -> int:
    tensors: list[SyntheticTensor] = []
    for i in range(layers):
        tensors += comfy_fp8_linear(f"blocks.{i}.mlp.0", shape, seed=i, input_scale=1.0)
    tensors.append(f32_scalar("scale_marker_free", 0.5))
    write_checkpoint(str(path), tensors)
    return shape[0] * shape[1]


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs /usr/bin/time")
def test_peak_rss_of_a_1gb_checkpoint_stays_under_the_bound(tmp_path: Path) -> None:
    src, out = tmp_path / "big.safetensors", tmp_path / "out.safetensors"
    largest = big_checkpoint(src)
    assert src.stat().st_size >= 1_000_000_000 and largest <= 64 * MB
    started = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "fp8stream", "calibrate", "--device", "cpu",
                        "--json", str(src), str(out)], capture_output=True, text=True)
    wall = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    bound_kb = (2 * largest + 300 * MB) // 1024
    print(f"\npeak RSS {peak_kb / 1024:.0f} MiB (bound {bound_kb / 1024:.0f} MiB), wall {wall:.1f} s for "
          f"{src.stat().st_size / 1e9:.2f} GB")
    assert peak_kb < bound_kb
    assert out.stat().st_size > src.stat().st_size
