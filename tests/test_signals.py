"""SIGINT and SIGTERM at every phase of a default run: one line on stderr, exit 130 / 143, nothing
left behind (no OUT, no temporary file beside it, no spool there or in $TMPDIR).

Not timing-dependent: the child process sends the signal to itself at a chosen point (inside
torch's or diffusers' own import, in the meta pass, at the spool's copy, at a weight of the
forward pass, as the copy at fixed places starts, at a layer of the stream), through a patch
installed before the CLI starts; the handlers then run as for a signal from outside
(scripts/signaltest.py sends them by the clock on a real-size file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import subprocess_env

FORWARD = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1"]

# The child: arm the trap, then run the CLI as `fp8stream` would.
CHILD = r"""
import importlib, os, sys
sig, where, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

def fire():
    os.kill(os.getpid(), sig)

class ImportTrap:  # fires while the package named imports its first submodule
    def find_spec(self, name, path=None, target=None):
        if name.startswith(where[len("import:"):] + "."):
            sys.meta_path.remove(self)
            fire()
        return None

if where.startswith("import:"):
    sys.meta_path.insert(0, ImportTrap())
else:  # module:Qualified.name:n -- fires at the n-th call
    module, qualname, nth = where.split(":")
    owner = importlib.import_module(module)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original, calls = getattr(owner, attr), []

    def trapped(*a, **k):
        calls.append(1)
        if len(calls) == int(nth):
            fire()
        return original(*a, **k)

    setattr(owner, attr, trapped)
from fp8stream.cli import main
sys.argv = ["fp8stream", *args]
main()
"""

PHASES = {  # where the signal lands -> (the trap, the signal): each signal in half of them, each run costs seconds
    "importing torch": ("import:torch", signal.SIGINT),
    "importing diffusers": ("import:diffusers", signal.SIGTERM),
    "meta pass": ("fp8stream.methods.forward.conditioning:from_shapes:1", signal.SIGTERM),
    "spool": ("fp8stream.pipeline.spool:_copy_data:1", signal.SIGINT),
    "forward pass": ("fp8stream.methods.forward.prefetch:Prefetcher.take:2", signal.SIGINT),
    "copy": ("fp8stream.pipeline.placed_run:place_file:1", signal.SIGINT),  # a file to a file, at fixed places
    "stream": ("fp8stream.pipeline.loop:_stream_layer_weight:2", signal.SIGTERM),  # --verify keeps the stream
}


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    return ft.comfy_file("flux", tmp_path_factory.mktemp("in"))


def _run_trapped(where: str, sig: int, args: list[str], tmpdir: Path,
                 stdin: bytes | None) -> subprocess.CompletedProcess:
    env = dict(subprocess_env(), TMPDIR=str(tmpdir))
    return subprocess.run([sys.executable, "-c", CHILD, str(int(sig)), where, *args], input=stdin,
                          capture_output=True, env=env, timeout=300)


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_ends_in_one_line_and_leaves_nothing(flux: Path, tmp_path: Path, phase: str) -> None:
    where, sig = PHASES[phase]
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmpdir.mkdir()
    piped = phase == "spool"  # a stream is spooled for the forward pass; a file is read in place
    args = ["calibrate", "-" if piped else str(flux), str(out_dir / "out.safetensors"), *FORWARD, "--no-progress",
            *(["--verify"] if phase == "stream" else [])]
    r = _run_trapped(where, sig, args, tmpdir, flux.read_bytes() if piped else None)
    lines = r.stderr.decode(errors="replace").splitlines()
    assert r.returncode == 128 + sig, lines[-20:]
    assert lines == ["fp8stream: error: interrupted" + ("" if sig == signal.SIGINT else f" by signal {int(sig)}")]
    assert r.stdout == b""
    assert os.listdir(out_dir) == [] and os.listdir(tmpdir) == []


def test_a_signal_while_the_cli_starts_ends_in_one_line() -> None:
    """Before any command runs (importing click): nothing of ours exists, one line, the code."""
    r = subprocess.run([sys.executable, "-c", CHILD, str(int(signal.SIGTERM)), "import:click", "--help"],
                       capture_output=True, env=subprocess_env(), timeout=120)
    assert r.returncode == 143
    assert r.stderr.decode().splitlines() == ["fp8stream: error: interrupted by signal 15"]


def test_a_signal_during_the_rename_into_place_leaves_the_complete_output(flux: Path, tmp_path: Path) -> None:
    """The rename is the run's last step that matters: a signal arriving during it waits for it,
    and then no longer takes the run back (exit 0, the whole output, no temporary file)."""
    reference = tmp_path / "reference.safetensors"
    args = ["calibrate", str(flux), "--method", "simulate", "--no-progress"]
    assert subprocess.run([sys.executable, "-m", "fp8stream", *args[:2], str(reference), *args[2:]],
                          env=subprocess_env(), capture_output=True).returncode == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.safetensors"
    r = _run_trapped("fp8stream.io.atomic:_fsync_folder:1", signal.SIGINT, [*args[:2], str(out), *args[2:]],
                     tmp_path, None)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert os.listdir(out_dir) == ["out.safetensors"] and out.read_bytes() == reference.read_bytes()


def test_a_signal_swallowed_on_its_way_out_still_stops_the_rename(tmp_path: Path) -> None:
    """Code that catches the signal's exception (a library's `except Exception` around an
    import) cannot make a run go on to publish its output: the rename raises it again."""
    from fp8stream import interrupts
    from fp8stream.errors import Interrupted
    from fp8stream.io.atomic import AtomicOutput

    previous = interrupts.take_over()
    before = interrupts.set_phase("running")
    try:
        try:
            signal.raise_signal(signal.SIGTERM)
        except Exception:  # swallowed, as some imported code does
            pass
        with pytest.raises(Interrupted):
            with AtomicOutput(str(tmp_path / "out.safetensors")) as f:
                f.write(b"data")
    finally:
        interrupts.set_phase(before)
        interrupts.give_back(previous)
    assert os.listdir(tmp_path) == []
