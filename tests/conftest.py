"""Shared test helpers: small checkpoints built with fp8stream.synthetic, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp8stream.cli import main
from fp8stream.synthetic.checkpoint import SyntheticTensor, bf16_tensor, comfy_fp8_linear, write_checkpoint

# The forward pass's derived cache (methods/forward/derived_cache.py) stays off in the suite: no
# test writes to the user's cache folder, and no test's result depends on what an earlier one
# left there. tests/test_fixed_costs.py turns it on in a folder of its own.
os.environ["FP8STREAM_NO_CACHE"] = "1"


def run_cli(*args: str) -> "object":
    """Run the CLI in-process; result has exit_code, stdout, stderr."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


REPO_ROOT = str(Path(__file__).resolve().parents[1])


def subprocess_env() -> dict[str, str]:
    """The environment for a child `python -m fp8stream`: this checkout's package comes first."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""))


def run_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m fp8stream` as a user would (real exit code, real stderr)."""
    return subprocess.run([sys.executable, "-m", "fp8stream", *map(str, args)], capture_output=True, text=True,
                          env=subprocess_env(), **kwargs)


def child_pids(pid: int) -> list[int]:
    """The process's child processes (Linux /proc)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:  # a thread that just ended
            continue
    return found


def open_fifo_for_writing(fifo: Path, run: subprocess.Popen, seconds: float = 120):
    """`fifo` opened for writing (unbuffered), which returns once `run` opens it for reading. A probe that
    opens it for writing and closes again must not be used: it releases a job waiting in its
    open, which then reads end of file (no writer) and fails, and the test waits on a pipe no one
    will read. If the run ends (or the time runs out) first, the open is released by a reader of
    our own and the test fails with the run's stderr."""
    opened: dict = {}
    waiter = threading.Thread(target=lambda: opened.setdefault("file", open(fifo, "wb", buffering=0)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + seconds
    while waiter.is_alive():
        if run.poll() is not None or time.monotonic() > deadline:
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            waiter.join()
            opened["file"].close()
            run.kill()
            pytest.fail(f"no job opened {fifo.name}: {run.communicate()[1].decode()}")
        waiter.join(0.05)
    return opened["file"]


def small_model_tensors(seed: int = 0, input_scale: float | None = None,
                        weight_only: bool = False) -> list[SyntheticTensor]:
    """A tiny DiT-like model: 3 FP8 linears plus passthrough tensors of other dtypes."""
    g = torch.Generator().manual_seed(seed)
    tensors = []
    shapes = {"blocks.0.attn.qkv": (96, 32), "blocks.0.mlp.0": (128, 32), "blocks.0.mlp.2": (32, 128)}
    for name, shape in shapes.items():
        tensors += comfy_fp8_linear(name, torch.randn(*shape, generator=g) / shape[1] ** 0.5,
                                    input_scale=input_scale, weight_only=weight_only, bias=True)
    tensors.append(bf16_tensor("blocks.0.norm.weight", torch.ones(32)))
    tensors.append(bf16_tensor("embed.weight", torch.randn(32, 16, generator=g)))
    return tensors


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    write_checkpoint(str(path), small_model_tensors(), metadata={"modelspec.title": "tiny"})
    return path
