#!/usr/bin/env python3
"""SIGINT and SIGTERM at fixed moments of a default `fp8stream calibrate` run; a table of what each left.

Every moment of a run must end either complete (exit 0, the whole output: the same bytes as an
uninterrupted run) or in one line on stderr with exit 130 (SIGINT) or 143 (SIGTERM) and nothing
left behind: no OUT, no temporary file beside it, no spool (beside OUT, or in $TMPDIR, which is
a fresh folder for each run here). Two inputs: the file itself, and the same bytes through a
pipe (stdin), which the default spools to a temporary file for the forward pass.

    python scripts/signaltest.py --input flux-2blocks.safetensors [--times 0.5,1,2,3,5,8]

Each run has --progress on, so that the table can say which phase the signal landed in (the
bars are cleared: what stays on stderr is counted in lines). Without --input, the 2-block
full-width Flux-dev inventory (`scripts/bench.py --arch flux --blocks 2`, 1.37 GB) is written into
--workdir first. Exit status 1 if any run broke the promise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}
# torch's compile cache folder, $TMPDIR/torchinductor_<user>: made by importing torch in every run
# (an uninterrupted one too), shared by every program that uses torch: not something a run leaves
TORCH_CACHE = "torchinductor_"


def stand_in(workdir: str) -> str:
    path = os.path.join(workdir, "flux-2blocks.safetensors")
    if not os.path.exists(path):
        code = ("from fp8stream.synthetic.checkpoint import from_inventory, write_checkpoint;"
                "from fp8stream.families import inventory;"
                f"write_checkpoint({path!r}, from_inventory(inventory('flux')(2)))")
        subprocess.run([sys.executable, "-c", code], check=True, env=_env(None))
    return path


def _env(tmpdir: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    return env


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def one_run(src: str, workdir: str, mode: str, delay: float | None, sig: str | None) -> dict:
    """A run (file or stdin), signalled after `delay` s (None: not at all), and what it left."""
    run_dir, tmp_dir = os.path.join(workdir, "run"), os.path.join(workdir, "tmp")
    for d in (run_dir, tmp_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    out = os.path.join(run_dir, "out.safetensors")
    cmd = [sys.executable, "-m", "fp8stream", "calibrate", "-" if mode == "stdin" else src, out, "--progress"]
    feeder = subprocess.Popen(["cat", src], stdout=subprocess.PIPE) if mode == "stdin" else None
    started = time.monotonic()
    err_path = os.path.join(workdir, "stderr.txt")  # a file, not a pipe: bars never wait for a reader
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=feeder.stdout if feeder else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=_env(tmp_dir))
    if feeder is not None:
        feeder.stdout.close()  # the child holds the pipe's read end
    sent = False
    if delay is not None:
        try:
            proc.wait(timeout=max(0.0, started + delay - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.send_signal(SIGNALS[sig])
            sent = True
    proc.wait()
    with open(err_path, "rb") as err:
        stderr = err.read()
    if feeder is not None:
        feeder.wait()
    left = sorted(os.listdir(run_dir)) + [os.path.join("$TMPDIR", n) for n in sorted(os.listdir(tmp_dir))
                                          if not n.startswith(TORCH_CACHE)]
    text = stderr.decode(errors="replace")
    phases = re.findall(r"(preparing|spooling input|copying|forward pass)", text)
    return {"mode": mode, "at": delay, "signal": sig, "code": proc.returncode, "seconds": time.monotonic() - started,
            "lines": text.count("\n"), "last": text.rstrip("\n").replace("\r", "\n").split("\n")[-1].strip(),
            "phase": (phases[-1] if phases else "start-up") if sent else "(run over: not sent)", "left": left,
            "digest": _digest(out) if proc.returncode == 0 and os.path.exists(out) else None}


def verdict(r: dict, reference) -> str:
    """'complete', 'interrupted', or what broke the promise. `reference()`: an uninterrupted
    run's digest (run only when needed: it takes the longest)."""
    if r["code"] == 0:
        return "complete" if r["left"] == ["out.safetensors"] and r["digest"] == reference() else "BROKEN: output"
    want = 128 + SIGNALS[r["signal"]] if r["signal"] else None
    if r["code"] != want:
        return f"BROKEN: exit {r['code']}"
    if r["lines"] != 1 or not r["last"].startswith("fp8stream: error: interrupted"):
        return f"BROKEN: {r['lines']} stderr lines"
    return "interrupted" if not r["left"] else "BROKEN: left files"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="a checkpoint (default: the 2-block Flux-dev stand-in, built in --workdir)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new one in $TMPDIR)")
    parser.add_argument("--times", default="0.5,1,2,3,5,8", help="seconds after the start, a comma list")
    parser.add_argument("--signals", default="INT,TERM")
    parser.add_argument("--modes", default="file,stdin")
    args = parser.parse_args()
    import tempfile

    workdir = args.workdir or tempfile.mkdtemp(prefix="signaltest-")
    os.makedirs(workdir, exist_ok=True)
    src = args.input or stand_in(workdir)
    full: dict = {}

    def reference() -> str:
        if not full:
            full.update(one_run(src, workdir, "file", None, None))
            assert full["code"] == 0, full["last"]
            print(f"an uninterrupted run: {full['seconds']:.1f} s, exit 0")
        return full["digest"]

    print(f"input {os.path.getsize(src) / 1e9:.2f} GB ({src}), each run with --progress to see the phase it was in")
    print("| input | signal | at (s) | phase | exit | stderr lines | left behind | verdict | last stderr line |")
    print("|---|---|---|---|---|---|---|---|---|")
    broken = 0
    for mode in args.modes.split(","):
        for at in [float(t) for t in args.times.split(",")]:
            for sig in args.signals.split(","):
                r = one_run(src, workdir, mode, at, sig)
                v = verdict(r, reference)
                broken += v.startswith("BROKEN")
                left = ", ".join(r["left"]) or "nothing"
                print(f"| {mode} | SIG{sig} | {at:g} | {r['phase']} | {r['code']} | {r['lines']} | {left} | {v} "
                      f"| {r['last'][:60]} |", flush=True)
    print(f"{broken} runs broke the promise")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
