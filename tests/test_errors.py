"""Errors a user can cause: one line on stderr, the documented exit code, nothing left behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import run_cli, run_subprocess


def assert_clean_failure(result, code: int, words: str, folder: Path, allowed: set[str]) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fp8stream: error:") and words in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert set(os.listdir(folder)) == allowed  # no output, no temporary file


def test_missing_input(tmp_path: Path) -> None:
    r = run_subprocess("calibrate", "--method", "simulate", tmp_path / "nope.safetensors", tmp_path / "out.safetensors")
    assert_clean_failure(r, 1, "no such file", tmp_path, set())


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 10)
    r = run_subprocess("calibrate", "--method", "simulate", bad, tmp_path / "out.safetensors")
    assert_clean_failure(r, 1, "not a safetensors file", tmp_path, {"bad.safetensors"})


@pytest.mark.parametrize("cut", [0.3, 0.9, 0.999])
def test_truncated_input(small_model: Path, tmp_path: Path, cut: float) -> None:
    data = small_model.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: int(len(data) * cut)])
    r = run_subprocess("calibrate", "--method", "simulate", bad, tmp_path / "out.safetensors")
    assert_clean_failure(r, 1, "truncated", tmp_path, {"model.safetensors", "cut.safetensors"})


def test_output_exists_needs_force(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    r = run_subprocess("calibrate", "--method", "simulate", small_model, out)
    assert_clean_failure(r, 2, "exists", tmp_path, {"model.safetensors", "out.safetensors"})
    assert out.read_bytes() == b"old"
    assert run_subprocess("calibrate", "--method", "simulate", "--force", small_model, out).returncode == 0
    assert out.read_bytes()[8:9] == b"{"


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "input_symlink", "folder_symlink", "relative"])
def test_output_is_the_input(small_model: Path, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = small_model.read_bytes()
    source, target = small_model, small_model
    names = {"model.safetensors"}
    if how == "symlink":
        target = tmp_path / "link.safetensors"
        target.symlink_to(small_model)
        names.add("link.safetensors")
    elif how == "hardlink":
        target = tmp_path / "hard.safetensors"
        os.link(small_model, target)
        names.add("hard.safetensors")
    elif how == "input_symlink":  # the input named through a link, the output by its real name
        source = tmp_path / "link.safetensors"
        source.symlink_to(small_model.name)
        names.add("link.safetensors")
    elif how == "folder_symlink":  # the same file through a linked folder
        (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
        target = tmp_path / "alias" / "model.safetensors"
        names.add("alias")
    elif how == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        source, target = Path("../model.safetensors"), small_model
        names.add("sub")
    # in-process: the exit path is tested above
    r = run_cli("calibrate", "--method", "simulate", "--force", source, target)
    assert_clean_failure(SimpleNamespace(returncode=r.exit_code, stderr=r.stderr), 2, "output is the input",
                         tmp_path, names)
    assert small_model.read_bytes() == before


def drop_root_file_powers() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the child's
    bounding set, so a root child obeys file modes after exec (it can still read its own files)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2, 3):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def root_can_drop_file_powers() -> bool:
    if sys.platform != "linux":
        return False
    if not os.path.exists("/bin/true"):
        return False
    return subprocess.run(["true"], preexec_fn=drop_root_file_powers, capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() == 0 and not root_can_drop_file_powers(),
                    reason="root writes into read-only folders, and cannot drop CAP_DAC_OVERRIDE here")
def test_unwritable_folder(small_model: Path, tmp_path: Path) -> None:
    """Really read-only, for root too (CI runs as root): the child runs without the capabilities
    that let root ignore file modes."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    before = small_model.read_bytes()
    try:
        r = run_subprocess("calibrate", "--method", "simulate", small_model, ro / "out.safetensors",
                           preexec_fn=drop_root_file_powers if os.geteuid() == 0 else None)
    finally:
        ro.chmod(0o755)
    assert_clean_failure(r, 1, "not writable", ro, set())
    assert small_model.read_bytes() == before


def test_missing_output_folder(small_model: Path, tmp_path: Path) -> None:
    r = run_subprocess("calibrate", "--method", "simulate", small_model, tmp_path / "no" / "out.safetensors")
    assert_clean_failure(r, 1, "does not exist", tmp_path, {"model.safetensors"})


def test_nothing_to_calibrate_exits_3(tmp_path: Path) -> None:
    from fp8stream.synthetic.checkpoint import f32_scalar, write_checkpoint

    plain = tmp_path / "plain.safetensors"
    write_checkpoint(str(plain), [f32_scalar("x", 1.0)])
    r = run_subprocess("calibrate", "--method", "simulate", plain, tmp_path / "out.safetensors")
    assert_clean_failure(r, 3, "no FP8 linear layer", tmp_path, {"plain.safetensors"})


def test_usage_error_exits_2(small_model: Path) -> None:
    r = run_subprocess("calibrate", "--method", "simulate", "--rule", "nonsense", small_model, "out.safetensors")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_version_and_help() -> None:
    r = run_subprocess("--version")
    assert r.returncode == 0 and "fp8stream" in r.stdout
    r = run_subprocess("calibrate", "--help")
    assert "Exit codes" in r.stdout and "143" in r.stdout
