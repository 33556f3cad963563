"""scripts/timeline.py, which docs/speed.md's timelines come from: every function it times still
exists under its name (a rename would leave a phase silently untimed), and a run through it
writes what a plain run writes, with the timeline on stderr and nothing imported early."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, run_subprocess, subprocess_env

sys.path.insert(0, str(Path(REPO_ROOT) / "scripts"))
import timeline  # noqa: E402


def test_every_timed_function_exists_under_its_name() -> None:
    missing = []
    for module, name in timeline.PHASES:
        if not callable(getattr(importlib.import_module(module), name, None)):
            missing.append(f"{module}.{name}")
    for module, cls, name, _ in timeline.SUMMED:
        owner = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(module)
        if not callable(getattr(owner, name, None)):
            missing.append(f"{module}.{cls}.{name}")
    assert missing == []


def test_a_run_through_the_timeline_writes_what_a_plain_run_writes(small_model: Path, tmp_path: Path) -> None:
    args = ["calibrate", str(small_model), "--method", "simulate", "--device", "cpu", "--no-progress"]
    plain = run_subprocess(*args[:2], tmp_path / "plain.safetensors", *args[2:])
    assert plain.returncode == 0, plain.stderr[-2000:]
    script = str(Path(REPO_ROOT) / "scripts" / "timeline.py")
    probe = ("import atexit, runpy, sys; "  # says, as the process exits, whether torch was imported
             "atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'no torch', "
             f"file=sys.stderr)); sys.argv = [{script!r}, *sys.argv[1:]]; runpy.run_path({script!r}, "
             "run_name='__main__')")
    timed = subprocess.run([sys.executable, "-c", probe, *args[:2], str(tmp_path / "timed.safetensors"), *args[2:]],
                           capture_output=True, text=True, env=subprocess_env())
    assert timed.returncode == 0, timed.stderr[-2000:]
    assert (tmp_path / "timed.safetensors").read_bytes() == (tmp_path / "plain.safetensors").read_bytes()
    lines = timed.stderr.splitlines()
    for phase in ("> rewrite._calibrate", "> run.stream_model", "< run.finish_files", "end"):
        assert any(line.startswith("[t+") and line.endswith(phase) for line in lines), phase
    assert any(line.startswith("[acc] Feed.show") for line in lines)
    assert "not found" not in timed.stderr and "no torch" in lines  # simulate on the CPU stays torch-free
