"""Pipes, zstd, batches and signals, through real processes and real pipes (issue 6)."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import zstandard

from conftest import child_pids, open_fifo_for_writing, run_cli, run_subprocess, small_model_tensors, subprocess_env
from fp8stream.io.compression import MAX_WINDOW_BYTES, compression_memory
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, f32_scalar, write_checkpoint

FP8STREAM = f"{shlex.quote(sys.executable)} -m fp8stream"


def shell(command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a shell pipeline (real pipes between real processes)."""
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, env=subprocess_env(),
                          **kwargs)


def calibrate_to_file(src: Path, out: Path, *options: str) -> bytes:
    r = run_subprocess("calibrate", "--method", "simulate", *options, src, out)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(data).read()


def q(path: Path) -> str:
    return shlex.quote(str(path))


def test_stdin_to_stdout_equals_file_to_file(small_model: Path, tmp_path: Path) -> None:
    expected = calibrate_to_file(small_model, tmp_path / "file.safetensors")
    out = tmp_path / "piped.safetensors"
    r = shell(f"cat {q(small_model)} | {FP8STREAM} calibrate --method simulate - - > {q(out)}")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == expected
    assert b"3 FP8 layers: 3 with FP8 activations" in r.stderr  # the report went to stderr, not into the stream


def test_json_report_goes_to_stderr_when_the_checkpoint_goes_to_stdout(small_model: Path, tmp_path: Path) -> None:
    expected = calibrate_to_file(small_model, tmp_path / "file.safetensors")
    r = shell(f"{FP8STREAM} calibrate --method simulate --json {q(small_model)} - < /dev/null")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    report = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert report["status"] == "ok" and report["output"] == "-" and report["layers_calibrated"] == 3


def test_zstd_in_and_out_through_pipes_and_files(small_model: Path, tmp_path: Path) -> None:
    expected = calibrate_to_file(small_model, tmp_path / "file.safetensors")
    packed = tmp_path / "model.safetensors.zst"
    packed.write_bytes(compress(small_model.read_bytes()))
    # A pipe: compressed input is detected, --zstd compresses stdout.
    out = tmp_path / "piped.safetensors.zst"
    r = shell(f"cat {q(packed)} | {FP8STREAM} calibrate --method simulate --zstd - - > {q(out)}")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert decompress(out.read_bytes()) == expected
    # Paths: .zst in, .zst out (level 19 in the calling thread fits the default 128 MB).
    out2 = tmp_path / "out.safetensors.zst"
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd-level", "19", "--json", packed, out2)
    assert r.returncode == 0, r.stderr
    assert decompress(out2.read_bytes()) == expected
    report = json.loads(r.stdout)
    assert report["bytes_out"] == len(expected) and report["bytes_written"] == out2.stat().st_size
    # Compressed in, plain out.
    assert calibrate_to_file(packed, tmp_path / "plain.safetensors") == expected


def test_stdin_input_stored_out_of_layer_order(tmp_path: Path) -> None:
    """Weights before their scales, markers first, layers interleaved backwards, an existing
    input scale at the very front: the pipe must give what the file gives."""
    g = torch.Generator().manual_seed(3)
    tensors = []
    for i in range(4):
        tensors += comfy_fp8_linear(f"blocks.{i}.ff", torch.randn(48, 24, generator=g),
                                    input_scale=1.0 if i == 2 else None)
    rng = random.Random(5)
    rng.shuffle(tensors)
    tensors.sort(key=lambda t: 0 if t.name.endswith(("comfy_quant", "input_scale")) else 1)
    src = tmp_path / "shuffled.safetensors"
    write_checkpoint(str(src), tensors, order="given")
    expected = calibrate_to_file(src, tmp_path / "file.safetensors")
    out = tmp_path / "piped.safetensors"
    r = shell(f"cat {q(src)} | {FP8STREAM} calibrate --method simulate - - > {q(out)}")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == expected
    # And the same scales as the file in layer order gives (scales do not depend on the order).
    ordered = tmp_path / "ordered.safetensors"
    write_checkpoint(str(ordered), sorted(tensors, key=lambda t: t.name), order="given")
    from safetensors import safe_open

    with safe_open(str(out), "pt") as a, safe_open(str(calibrate_path(ordered, tmp_path)), "pt") as b:
        for i in range(4):
            assert torch.equal(a.get_tensor(f"blocks.{i}.ff.input_scale"), b.get_tensor(f"blocks.{i}.ff.input_scale"))


def calibrate_path(src: Path, folder: Path) -> Path:
    out = folder / f"{src.stem}.out.safetensors"
    calibrate_to_file(src, out)
    return out


@pytest.mark.parametrize("how", ["file", "pipe"])
def test_zstd_frame_with_an_oversized_window_is_refused(small_model: Path, tmp_path: Path, how: str) -> None:
    packed = tmp_path / "wide.safetensors.zst"
    # Streamed without a content size, so the frame header declares the full 256 MB window.
    with open(packed, "wb") as f:
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
        with zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
            w.write(small_model.read_bytes())
    assert zstandard.get_frame_parameters(packed.read_bytes()[:18]).window_size > MAX_WINDOW_BYTES
    out = tmp_path / "out.safetensors"
    if how == "file":
        r = run_subprocess("calibrate", "--method", "simulate", packed, out)
        stderr = r.stderr
    else:
        r = shell(f"cat {q(packed)} | {FP8STREAM} calibrate --method simulate - {q(out)}")
        stderr = r.stderr.decode()
    assert r.returncode == 1
    assert stderr.count("\n") == 1 and "256 MB window, over the 128 MB limit" in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_corrupt_zstd_and_trailing_bytes_are_clean_errors(small_model: Path, tmp_path: Path) -> None:
    packed = bytearray(compress(small_model.read_bytes()))
    packed[len(packed) // 2] ^= 0xFF  # caught by the frame's checksum at the latest
    bad = tmp_path / "bad.safetensors.zst"
    bad.write_bytes(bytes(packed))
    r = run_subprocess("calibrate", "--method", "simulate", bad, tmp_path / "out.safetensors")
    assert r.returncode == 1 and "zstd" in r.stderr and "Traceback" not in r.stderr
    r = shell(f"(cat {q(small_model)}; echo junk) | "
              f"{FP8STREAM} calibrate --method simulate - {q(tmp_path / 'out.safetensors')}")
    assert r.returncode == 1 and b"continues after the last tensor" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors.zst", "model.safetensors"]


def test_compression_memory_is_checked_before_any_work(small_model: Path, tmp_path: Path) -> None:
    assert 640 << 20 < compression_memory(22, 0) < 800 << 20  # zstandard says 641 MB for level 22; 725 measured
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd-level", "22", small_model,
                       tmp_path / "out.safetensors.zst")
    assert r.returncode == 2 and "needs about" in r.stderr and "128 MB allowed" in r.stderr
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd-level", "19", "--zstd-threads", "2", small_model,
                       tmp_path / "o.safetensors.zst")
    assert r.returncode == 2 and "2 worker thread(s)" in r.stderr
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd-level", "22", "--max-memory", "2G", small_model,
                       tmp_path / "ok.safetensors.zst")
    assert r.returncode == 0, r.stderr
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd", small_model, tmp_path / "plain.safetensors")
    assert r.returncode == 2 and "*.zst" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "ok.safetensors.zst"]


def test_stdout_closed_by_the_reader_is_a_clean_error(tmp_path: Path) -> None:
    src = tmp_path / "wide.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear("big", (1024, 1024), seed=1))  # 1 MB: more than a pipe holds
    r = shell(f"{FP8STREAM} calibrate --method simulate {q(src)} - | head -c 100 > /dev/null; exit ${{PIPESTATUS[0]}}")
    assert r.returncode == 1, r.stderr
    assert r.stderr.decode().count("\n") == 1 and b"pipe closed" in r.stderr


def make_batch(folder: Path, names: list[str], corrupt: set[str] = frozenset(),
               plain: set[str] = frozenset()) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        if name in corrupt:
            path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
        elif name in plain:
            write_checkpoint(str(path), [f32_scalar("x", 1.0)])
        else:
            write_checkpoint(str(path), small_model_tensors(seed=i))
        paths.append(path)
    return paths


def json_lines(stdout: str) -> dict[str, dict]:
    return {Path(doc["input"]).name: doc for doc in map(json.loads, stdout.strip().splitlines())}


def test_batch_with_a_corrupt_file_stops_without_keep_going(tmp_path: Path) -> None:
    paths = make_batch(tmp_path / "in", ["a.safetensors", "b.safetensors", "c.safetensors"], corrupt={"b.safetensors"})
    out = tmp_path / "out"
    r = run_subprocess("calibrate", "--method", "simulate", "--json", *paths, "--out-dir", out)
    assert r.returncode == 4, r.stderr
    docs = json_lines(r.stdout)
    statuses = [docs[n]["status"] for n in ("a.safetensors", "b.safetensors", "c.safetensors")]
    assert statuses == ["ok", "failed", "not-run"]
    assert "not valid JSON" in docs["b.safetensors"]["error"]
    assert sorted(os.listdir(out)) == ["a.safetensors"]  # no output, no temp for b; c never started


def test_batch_stops_at_the_first_failure_whatever_follows(tmp_path: Path) -> None:
    """m1's output exists (a failure): m2..m4 must not run, not only m2 (issue 10, item 2)."""
    names = ["m1.safetensors", "m2.safetensors", "m3.safetensors", "m4.safetensors"]
    paths = make_batch(tmp_path / "in", names)
    out = tmp_path / "out"
    out.mkdir()
    (out / "m1.safetensors").write_bytes(b"older output")
    r = run_cli("calibrate", "--method", "simulate", "--json", *paths, "--out-dir", out)
    assert r.exit_code == 1, r.output
    docs = json_lines(r.stdout)
    assert [docs[n]["status"] for n in names] == ["failed", "not-run", "not-run", "not-run"]
    assert sorted(os.listdir(out)) == ["m1.safetensors"]
    assert (out / "m1.safetensors").read_bytes() == b"older output"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_with_a_corrupt_file_and_keep_going(tmp_path: Path, jobs: str) -> None:
    names = ["a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors"]
    paths = make_batch(tmp_path / "in", names, corrupt={"b.safetensors"}, plain={"d.safetensors"})
    out = tmp_path / "out"
    r = run_subprocess("calibrate", "--method", "simulate", "--json", "--keep-going", "--jobs", jobs, *paths,
                       "--out-dir", out)
    assert r.returncode == 4, r.stderr
    docs = json_lines(r.stdout)
    assert {n: d["status"] for n, d in docs.items()} == {
        "a.safetensors": "ok", "b.safetensors": "failed", "c.safetensors": "ok", "d.safetensors": "skipped"}
    for doc in docs.values():
        assert {"input", "layers_calibrated", "layers_skipped", "seconds", "bytes_in", "bytes_out", "status",
                "error"} <= set(doc)
    assert docs["a.safetensors"]["layers_calibrated"] == 3
    assert sorted(os.listdir(out)) == ["a.safetensors", "c.safetensors"]
    # Outputs equal what a single run writes.
    assert (out / "a.safetensors").read_bytes() == calibrate_to_file(paths[0], tmp_path / "single.safetensors")


def test_batch_exit_codes_all_failed_and_skipped_only(tmp_path: Path) -> None:
    bad = make_batch(tmp_path / "bad", ["x.safetensors", "y.safetensors"], corrupt={"x.safetensors", "y.safetensors"})
    r = run_subprocess("calibrate", "--method", "simulate", "--keep-going", *bad, "--out-dir", tmp_path / "o1")
    assert r.returncode == 1, r.stderr
    assert "x.safetensors: failed:" in r.stderr
    skipped = make_batch(tmp_path / "plain", ["p.safetensors", "g.safetensors"], plain={"p.safetensors"})
    r = run_subprocess("calibrate", "--method", "simulate", "--json", *skipped, "--out-dir", tmp_path / "o2")
    assert r.returncode == 0, r.stderr
    assert json_lines(r.stdout)["p.safetensors"]["status"] == "skipped"


def test_batch_globs_and_zstd_outputs(tmp_path: Path) -> None:
    make_batch(tmp_path / "in", ["a.safetensors", "b.safetensors"])
    out = tmp_path / "out"
    r = run_subprocess("calibrate", "--method", "simulate", "--zstd", "--json", str(tmp_path / "in" / "*.safetensors"),
                       "--out-dir", out)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["a.safetensors.zst", "b.safetensors.zst"]
    expected = calibrate_to_file(tmp_path / "in" / "a.safetensors", tmp_path / "a.safetensors")
    assert decompress((out / "a.safetensors.zst").read_bytes()) == expected
    r = run_subprocess("calibrate", "--method", "simulate", str(tmp_path / "in" / "*.nothing"), "--out-dir", out)
    assert r.returncode == 2 and "matches no file" in r.stderr


def test_two_inputs_with_the_same_output_name_are_refused_before_anything_starts(tmp_path: Path) -> None:
    first = make_batch(tmp_path / "one", ["model.safetensors"])
    second = make_batch(tmp_path / "two", ["model.safetensors.zst"])  # .zst is stripped: same name
    out = tmp_path / "out"
    r = run_subprocess("calibrate", "--method", "simulate", *first, *second, "--out-dir", out)
    assert r.returncode == 2 and "would all be written to" in r.stderr
    assert not out.exists()


def test_max_memory_bounds_the_batch(tmp_path: Path) -> None:
    paths = make_batch(tmp_path / "in", ["a.safetensors", "b.safetensors"])
    # 300M: the base every run needs is allowed, but a file needs more (2 x largest tensor on top)
    r = run_subprocess("calibrate", "--method", "simulate", "--json", "--jobs", "2", "--max-memory", "300M", *paths,
                       "--out-dir", tmp_path / "o")
    assert r.returncode == 1, r.stderr
    assert "over --max-memory" in json_lines(r.stdout)["a.safetensors"]["error"]
    assert not (tmp_path / "o").exists()  # nothing written: no empty folder left behind
    r = run_subprocess("calibrate", "--method", "simulate", "--jobs", "2", "--max-memory", "nonsense", *paths,
                       "--out-dir", tmp_path / "o")
    assert r.returncode == 2 and "--max-memory" in r.stderr


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _feed(path: Path, process: subprocess.Popen, held_back: int) -> None:
    """Send all but the last `held_back` bytes: the run then waits, mid-file, for the rest."""
    data = path.read_bytes()
    process.stdin.write(data[: len(data) - held_back])
    process.stdin.flush()


def _unread_bytes(pipe) -> int:
    """Bytes written into a pipe that its reader has not taken yet (FIONREAD; Linux answers it on
    either end of a pipe)."""
    import array
    import fcntl
    import termios

    n = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, n, True)
    return n[0]


def _cpu_and_states(pid: int) -> tuple[int, set[str]]:
    """CPU ticks used by all of a process's threads, and the set of their states (Linux /proc)."""
    ticks, states = 0, set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that just ended
            continue
        states.add(fields[0])
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks, states


def _blocked(pid: int) -> bool:
    """Every thread asleep and no CPU used over 0.3 s: the process waits (here: for stdin), and
    is not half-way through starting a thread, which a signal must not interrupt (CPython then
    leaves a thread that never runs and a join that never returns)."""
    try:
        before, states = _cpu_and_states(pid)
        if states != {"S"}:
            return False
        time.sleep(0.3)
        after, states = _cpu_and_states(pid)
    except FileNotFoundError:  # the process is gone (a short-lived helper): not what we wait for
        return False
    return states == {"S"} and after == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIONREAD on a pipe's write end and /proc are Linux's")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_leaves_nothing_at_the_target(tmp_path: Path, sig: int, code: int) -> None:
    """Deterministic: the signal is sent only once the child has taken every byte sent so far
    (the pipe is empty), has its temporary file open, and is asleep using no CPU, so it is blocked
    waiting for the held-back half; stdin stays open until the child has exited, so the input
    cannot end before the signal is handled (closing it early let a run end with "truncated"
    instead of the signal's code)."""
    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear("a", (512, 512), seed=1) + comfy_fp8_linear("b", (512, 512), seed=2))
    folder = tmp_path / "target"
    folder.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "-",
                          str(folder / "out.safetensors")],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    try:
        _feed(src, p, src.stat().st_size // 2)
        _wait_for(lambda: any(n.endswith(".tmp") for n in os.listdir(folder)) and _unread_bytes(p.stdin) == 0
                  and _blocked(p.pid))
        assert p.poll() is None  # still running: half of the input has not been sent
        p.send_signal(sig)
        p.wait(timeout=60)  # stdin still open: only the signal can end the run
        stderr = p.stderr.read()
    finally:
        p.kill()
        p.stdin.close()
        p.stderr.close()
    assert p.returncode == code, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert os.listdir(folder) == []  # no output, no temporary file


def test_sigterm_mid_stream_to_stdout_exits_non_zero(tmp_path: Path) -> None:
    src = tmp_path / "in.safetensors"
    # 16 MB layers: more than a read-ahead block, so layer a leaves before the input ends.
    write_checkpoint(str(src),
                     comfy_fp8_linear("a", (4096, 4096), seed=1) + comfy_fp8_linear("b", (4096, 4096), seed=2))
    out = tmp_path / "partial.safetensors"
    with open(out, "wb") as sink:
        p = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "-", "-"],
                             stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.PIPE, env=subprocess_env())
        try:
            _feed(src, p, 1000)  # layer a's weight is out, b's is not complete
            # The guard of the signal test above: every byte sent taken, layer a's weight out, and
            # the child asleep waiting for the held-back bytes (not half-way through starting a thread).
            _wait_for(lambda: out.stat().st_size > 1 << 20 and _unread_bytes(p.stdin) == 0 and _blocked(p.pid))
            assert p.poll() is None  # still running: the last bytes have not been sent
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)  # stdin still open (communicate would close it): only the signal ends the run
            stderr = p.stderr.read()
        finally:
            p.kill()
            p.stdin.close()
            p.stderr.close()
    assert p.returncode == 143, stderr
    assert 0 < out.stat().st_size < src.stat().st_size  # partial stream, and the exit code says so


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_a_parallel_batch_and_its_workers(tmp_path: Path) -> None:
    """Workers read from FIFOs that never finish: SIGTERM to the batch must end them all,
    leaving no output and no temporary file."""
    src = tmp_path / "in.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear("a", (512, 512), seed=1))
    data = src.read_bytes()
    fifos = [tmp_path / f"f{i}.safetensors" for i in range(2)]
    for fifo in fifos:
        os.mkfifo(fifo)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "--jobs", "2",
                          *map(str, fifos), "--out-dir", str(out)], stderr=subprocess.PIPE, env=subprocess_env())
    writers = []
    try:
        for fifo in fifos:  # a worker reads each (the parent never reads a pipe), and waits for the rest
            writers.append(open_fifo_for_writing(fifo, p))
            writers[-1].write(data[: len(data) // 2])
        # Both workers have their temporary file and wait for the rest of their FIFO (asleep, no CPU):
        # not half-way through starting a thread, where a signal can leave a join that never returns.
        _wait_for(lambda: out.exists() and sum(n.endswith(".tmp") for n in os.listdir(out)) == 2
                  and all(_blocked(pid) for pid in [p.pid, *child_pids(p.pid)]))
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=60)
    finally:
        p.kill()
        for writer in writers:
            writer.close()
    assert p.returncode == 143, stderr
    _wait_for(lambda: not out.exists(), timeout=10)  # temporary files gone, then the folder the run made
