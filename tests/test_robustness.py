"""Crashes, full disks, truncation and files that change: nothing is lost, nothing is left behind.

Samples of the long runs in scripts/ (truncate.py: every 1/64; killtest.py: 50 kills).
"""

from __future__ import annotations

import collections
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import fp8stream.io.atomic
from conftest import run_cli, run_subprocess, subprocess_env
from fp8stream.errors import InvalidCheckpointError
from fp8stream.io.placed import PlacedWriter
from fp8stream.io.reader import TensorStream
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint
from hostile import FAST_SETTINGS, file_digest, kill_calibrate, reference_checkpoint, temps_in, truncated_run


def test_disk_full_is_a_clean_error(small_model: Path, tmp_path: Path) -> None:
    """`ulimit -f` in the child: writes past the limit fail with EFBIG (Python ignores SIGXFSZ)."""
    before = file_digest(str(small_model))

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    r = run_subprocess("calibrate", "--method", "simulate", small_model, tmp_path / "out.safetensors",
                       preexec_fn=limit_file_size)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"fp8stream: error: {tmp_path / 'out.safetensors'}: disk full or file too large while writing (File too large)"]
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert file_digest(str(small_model)) == before


def test_free_space_is_checked_before_any_work(small_model: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli("calibrate", "--method", "simulate", small_model, out).exit_code == 0
    needed = out.stat().st_size
    old = out.read_bytes()
    free = {"bytes": needed - 1}
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(fp8stream.io.atomic.shutil, "disk_usage", lambda folder: usage(10**12, 0, free["bytes"]))
    # --force: the old OUT stays until the new one is renamed over it, so its space is not free
    result = run_cli("calibrate", "--method", "simulate", "--force", small_model, out)
    assert result.exit_code == 1
    assert "not enough free space" in result.stderr and "both must fit" in result.stderr
    assert out.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["model.safetensors", "out.safetensors"]
    # a killed run's temp file is removed before writing: its space counts as free
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.safetensors.fp8stream-{int(dead.stdout)}.tmp"
    stale.write_bytes(bytes(64 << 10))
    assert run_cli("calibrate", "--method", "simulate", "--force", small_model, out).exit_code == 0
    assert not stale.exists()
    free["bytes"] = needed
    assert run_cli("calibrate", "--method", "simulate", "--force", small_model, out).exit_code == 0


@pytest.mark.parametrize("path", ["placed", "stream"])
@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_input_that_changes_size_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str,
                                            path: str) -> None:
    """Written at fixed places (a file to a file) or streamed (--verify): the change is caught."""
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear("a", (64, 64)) + comfy_fp8_linear("b", (64, 64), seed=1))

    def change_file():  # another program writes to the file while we read it
        with open(src, "r+b") as f:
            f.seek(0, os.SEEK_END) if change == "grows" else f.truncate(f.seek(0, os.SEEK_END) - 4096)
            if change == "grows":
                f.write(b"more")

    original_chunks, original_copy = TensorStream.chunks, PlacedWriter.copy_from

    def chunks_then_change(self, info, *args):
        yield from original_chunks(self, info, *args)
        if info.name == "a.weight":
            change_file()

    def copy_then_change(self, in_fd, in_offset, name, *args):  # no scale for these layers: a.weight is copied
        where = original_copy(self, in_fd, in_offset, name, *args)
        if name == "a.weight":
            change_file()
        return where

    monkeypatch.setattr(TensorStream, "chunks", chunks_then_change)
    monkeypatch.setattr(PlacedWriter, "copy_from", copy_then_change)
    with pytest.raises(InvalidCheckpointError, match="changed size|truncated"):
        calibrate_file(RewriteOptions(input=str(src), output=str(out), settings=FAST_SETTINGS, verify=path == "stream"))
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors"]


@pytest.fixture(scope="module")
def reference_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ref") / "reference.safetensors"
    reference_checkpoint(str(path), layers=2, shape=(64, 128))
    return path.read_bytes()


@pytest.mark.parametrize("k", [0, 33])
def test_truncation_at_k_64ths_is_a_clean_error(reference_blob: bytes, tmp_path: Path, k: int) -> None:
    line = truncated_run(reference_blob, len(reference_blob) * k // 64, str(tmp_path), subprocess_env())
    assert "truncated" in line or "shorter than 8 bytes" in line, line


@pytest.mark.parametrize("k", [1, 9, 17, 48, 63])
def test_truncation_in_process(reference_blob: bytes, tmp_path: Path, k: int) -> None:
    src, out = tmp_path / "cut.safetensors", tmp_path / "out.safetensors"
    src.write_bytes(reference_blob[: len(reference_blob) * k // 64])
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        calibrate_file(RewriteOptions(input=str(src), output=str(out), settings=FAST_SETTINGS))
    assert os.listdir(tmp_path) == ["cut.safetensors"]


def test_kill_9_mid_write_leaves_nothing_at_the_output(tmp_path: Path) -> None:
    """SIGKILL once the temp file holds data: no OUT; the next run removes the dead run's temp."""
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_checkpoint(str(src), [t for i in range(4) for t in comfy_fp8_linear(f"l{i}", (1024, 1024), seed=i)])
    # The research note's sampling mode with many samples keeps the run busy between writes, so
    # the kill lands while the temp file is being written (the default method is too quick).
    slow = ("--sim-mode", "note", "--samples", "4096")
    landed = kill_calibrate(str(src), str(out), subprocess_env(), None, extra=slow)
    assert landed == "mid-write"
    assert len(temps_in(str(tmp_path))) == 1
    r = run_subprocess("calibrate", "--method", "simulate", "--samples", "4", src, out)
    assert r.returncode == 0, r.stderr
    assert temps_in(str(tmp_path)) == [] and sorted(os.listdir(tmp_path)) == ["in.safetensors", "out.safetensors"]


def test_live_runs_temp_is_never_touched(small_model: Path, tmp_path: Path) -> None:
    live = tmp_path / f".out.safetensors.fp8stream-{os.getppid()}.tmp"
    live.write_bytes(b"a concurrent run's data")
    assert run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "out.safetensors").exit_code == 0
    assert live.read_bytes() == b"a concurrent run's data"
