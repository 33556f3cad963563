"""`fp8stream zoo` end to end with real parts and no network: a local Ray cluster started by the
command (2 CPUs, 127.0.0.1) and moto's S3 server. A dozen checkpoints: plain, sharded (a folder
with its index), zstd, one large enough to be killed mid-upload, one corrupt, one already done.
What a user checks: every good output is the bytes a local run gives, the corrupt one is
reported failed, the done one skipped, no partial object is ever visible, the killed worker's
file is finished by a retry, and no multipart upload is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import torch
import zstandard

from fp8stream.methods.settings import CalibrationSettings
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.synthetic.example import example_tensors
from tests.conftest import small_model_tensors, subprocess_env
from tests.s3_endpoint import HoldingProxy, pending_uploads, s3, s3_endpoint  # noqa: F401 (fixture)
from tests.shard_files import sharded_model

BUCKET = "zoo-tests"
BIG = "big.safetensors"


def _build(tmp_path: Path) -> dict[str, bytes]:
    """name -> the bytes uploaded under src/ (the zoo's inputs)."""
    files: dict[str, bytes] = {}
    for i in range(2):  # sharded: a folder with its index (key "sharded0/<file>")
        sharded_model(tmp_path / f"sharded{i}", seed=30 + i)
        for part in sorted((tmp_path / f"sharded{i}").iterdir()):
            files[f"sharded{i}/{part.name}"] = part.read_bytes()
    for i in range(5):
        path = tmp_path / f"plain{i}.safetensors"
        write_checkpoint(str(path), small_model_tensors(seed=i))
        files[path.name] = path.read_bytes()
    for i in range(2):
        path = tmp_path / f"packed{i}.safetensors"
        write_checkpoint(str(path), small_model_tensors(seed=10 + i))
        files[path.name + ".zst"] = zstandard.ZstdCompressor().compress(path.read_bytes())
    write_checkpoint(str(tmp_path / BIG), example_tensors(hidden=512, blocks=3))
    files[BIG] = (tmp_path / BIG).read_bytes()
    write_checkpoint(str(tmp_path / "done.safetensors"), small_model_tensors(seed=20))
    files["done.safetensors"] = (tmp_path / "done.safetensors").read_bytes()
    files["corrupt.safetensors"] = (64).to_bytes(8, "little") + b"{not json" + b" " * 55 + b"\0" * 100
    return files


# These tests are about Ray and the store, so they name the method and device they compare with
# (zoo's defaults are calibrate's: auto, which keeps these unknown-family files weight-only).
SIMULATE_ON_CPU = ("--method", "simulate", "--device", "cpu")


def _expected(tmp_path: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """What `fp8stream calibrate --method simulate --device cpu` gives for each good file, run locally with the
    one torch thread Ray gives a 1-CPU task (OMP_NUM_THREADS=1): float reductions of large
    matrices differ in the last bit with the thread count (docs/remote.md)."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _calibrate_all(tmp_path, files, out)
    finally:
        torch.set_num_threads(threads)
    return out


def _calibrate_all(tmp_path: Path, files: dict[str, bytes], out: dict[str, bytes]) -> None:
    for folder in sorted({name.split("/")[0] for name in files if "/" in name}):  # sharded models
        dst = tmp_path / f"out-{folder}"
        report = calibrate_file(RewriteOptions(input=str(tmp_path / folder), output=str(dst),
                                               settings=CalibrationSettings(method="simulate", device="cpu")))
        assert report.status == "ok"
        out.update({f"{folder}/{p.name}": p.read_bytes() for p in dst.iterdir()})
    for name, data in files.items():
        if name == "corrupt.safetensors" or "/" in name:
            continue
        src, dst = tmp_path / ("in-" + name), tmp_path / ("out-" + name)
        src.write_bytes(data)
        report = calibrate_file(RewriteOptions(input=str(src), output=str(dst),
                                               settings=CalibrationSettings(method="simulate", device="cpu")))
        assert report.status == "ok"
        out[name] = dst.read_bytes()


def _mark_done(files: dict[str, bytes]) -> None:
    """done.safetensors as an earlier zoo run left it: written by the same task code, with the
    input identity and options recorded on the object."""
    from fp8stream.commands.zoo import zoo_settings
    from fp8stream.zoo.identity import output_metadata
    from fp8stream.zoo.listing import ZooItem, probe
    from fp8stream.zoo.task import run_one
    settings, digest = zoo_settings("simulate", "bound", 4.0, 64, 0, "cpu", None)
    item = ZooItem(f"s3://{BUCKET}/src/done.safetensors", f"s3://{BUCKET}/dst/done.safetensors")
    probe(item, None)
    report = run_one(RewriteOptions(input=item.input, output=item.output, settings=settings), item.pins,
                     item.record_url, output_metadata(item.identity, digest), {})
    assert report.status == "ok", report.error


def _ray_workers(root: int) -> list[int]:
    """Pids of Ray workers running our task, among the descendants of process `root`."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = []
    for pid in parent:
        p = pid
        while p in parent and p != root and p > 1:
            p = parent[p]
        if p == root:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::_run_one_task"):
                        found.append(pid)
            except OSError:
                pass
    return found


def _watch(proc: subprocess.Popen, store, expected: dict[str, bytes], proxy: HoldingProxy) -> bool:
    """Until the zoo ends: every visible output is complete; once the proxy holds the big
    file's first part (its upload begun, not finished), kill the workers: the worker sending it
    is blocked there, so the kill lands mid-upload every run. Returns whether a kill happened."""
    killed = False
    deadline = time.monotonic() + 170
    while proc.poll() is None and time.monotonic() < deadline:
        for key, info in store.find(f"{BUCKET}/dst", detail=True, refresh=True).items():
            name = key.removeprefix(f"{BUCKET}/dst/")
            assert info["size"] == len(expected[name]), f"partial object visible: {name}"
        if not killed and proxy.held.wait(0.05):
            assert any(u["Key"] == f"dst/{BIG}" for u in pending_uploads(store, BUCKET))
            workers = _ray_workers(proc.pid)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            killed = bool(workers)
    return killed


def test_zoo_on_ray_from_and_to_s3(tmp_path: Path, s3_endpoint: str) -> None:  # noqa: F811
    store = s3(s3_endpoint)
    store.mkdir(BUCKET)
    files = _build(tmp_path)
    for name, data in files.items():
        store.pipe(f"{BUCKET}/src/{name}", data)
    expected = _expected(tmp_path, files)
    _mark_done(files)
    log = tmp_path / "ray.log"
    cmd = [sys.executable, "-m", "fp8stream", "zoo", f"s3://{BUCKET}/src", f"s3://{BUCKET}/dst", "--workers", "2",
           "--ray-log", str(log), *SIMULATE_ON_CPU]
    # the zoo reaches the store through a relay that holds the big file's first UploadPart
    proxy = HoldingProxy(s3_endpoint, rb"PUT /%s/dst/%s\?[^ ]*partNumber=" % (BUCKET.encode(), BIG.encode()))
    proc = subprocess.Popen(cmd, env={**subprocess_env(), "AWS_ENDPOINT_URL": proxy.url}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        killed = _watch(proc, store, expected, proxy)
        out, err = proc.communicate(timeout=60)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed, "no worker was caught mid-upload"
    assert proc.returncode == 4, err  # some files failed (the corrupt one)
    lines = [json.loads(line) for line in out.splitlines()]
    status = {line["input"].rsplit("/", 1)[1]: line["status"] for line in lines if "input" in line}
    assert status.pop("corrupt.safetensors") == "failed"
    assert status.pop("done.safetensors") == "skipped"
    assert set(status.values()) == {"ok"} and len(status) == 10 and {"sharded0", "sharded1"} <= set(status)
    assert lines[-1]["summary"]["ok"] == 10 and lines[-1]["summary"]["failed"] == 1
    for name, data in expected.items():
        assert store.cat(f"{BUCKET}/dst/{name}") == data, name
    assert not pending_uploads(store, BUCKET)
    assert all(line.startswith("zoo: [") for line in err.splitlines()), err  # Ray's messages went to the log
    again = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    summary = json.loads(again.stdout.splitlines()[-1])["summary"]
    assert again.returncode == 4 and summary["skipped"] == 11 and summary["ok"] == 0, again.stderr


def _start_head(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` in a session of its own (stopped by its pid, never by
    `ray stop`, which would stop every Ray on the machine); its address once it is up."""
    import socket

    from tests.s3_endpoint import _free_port
    port = _free_port()
    log = open(tmp / "head.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--port", str(port), "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                             "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", str(tmp / "t")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while b"Ray runtime started" not in (tmp / "head.log").read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp / "head.log").read_text()[-2000:]
        time.sleep(0.2)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return proc, f"127.0.0.1:{port}"


def _stop_head(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # --block: Ray stops the processes it started
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of this head's session is left
    except ProcessLookupError:
        pass
    proc.wait()


def test_zoo_joins_an_existing_cluster_with_its_token(tmp_path: Path) -> None:
    """--address: a head started apart (token authentication on), fp8stream shipped to its
    workers as a runtime-environment module; a driver without the token is refused in one line."""
    import secrets
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="fp8ray-", dir="/tmp"))  # Ray's socket paths must stay short
    src = tmp_path / "src"
    src.mkdir()
    files = {}
    write_checkpoint(str(src / "m.safetensors"), small_model_tensors(seed=40))
    files["m.safetensors"] = (src / "m.safetensors").read_bytes()
    expected = _expected(tmp_path, files)
    token = secrets.token_hex(16)
    env = dict(subprocess_env(), HOME=str(tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head, address = _start_head(tmp, {k: v for k, v in env.items() if k != "PYTHONPATH"})
    try:
        cmd = [sys.executable, "-m", "fp8stream", "zoo", f"file://{src}", f"file://{tmp_path}/dst",
               "--address", address, "--ray-log", str(tmp_path / "ray.log"), *SIMULATE_ON_CPU]
        refused = subprocess.run(cmd, env=dict(env, RAY_AUTH_TOKEN=""), capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith(f"fp8stream: error: Ray: cannot join {address} (Token authentication")
        joined = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        shipped = list((tmp / "t").glob("session_*/runtime_resources/py_modules_files/**/fp8stream/zoo/task.py"))
    finally:
        _stop_head(head)
    assert joined.returncode == 0, joined.stderr
    assert shipped, "fp8stream did not reach the workers through the runtime environment"
    assert json.loads(joined.stdout.splitlines()[-1])["summary"]["ok"] == 1
    for name, data in expected.items():
        assert (tmp_path / "dst" / name).read_bytes() == data, name
