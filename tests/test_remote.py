"""Remote IN and OUT through fsspec against a real S3 endpoint (moto's server on 127.0.0.1):
what a user checks is that the object is the same bytes as a local run, appears only when
complete, and that nothing is left behind (no partial object, no multipart upload)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from click.testing import CliRunner

from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.cli import main
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.synthetic.example import example_tensors
from tests.conftest import run_subprocess, small_model_tensors, subprocess_env  # noqa: F401
from tests.s3_endpoint import pending_uploads, s3, s3_endpoint  # noqa: F401 (fixture)

BUCKET = "remote-tests"


@pytest.fixture(scope="module")
def store(s3_endpoint: str):  # noqa: F811
    fs = s3(s3_endpoint)
    fs.mkdir(BUCKET)
    return fs


def _local_run(tmp_path: Path, src: Path, name: str = "local.safetensors") -> bytes:
    """The same calibration of a local file (in-process: torch is loaded here already)."""
    out = tmp_path / name
    report = calibrate_file(RewriteOptions(input=str(src), output=str(out), settings=CalibrationSettings(method="simulate", device="cpu")))
    assert report.status == "ok"
    return out.read_bytes()


def _cli(*args: object) -> tuple[int, str]:
    """The CLI in-process: exit code and stderr (for runs whose exit is all we check)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr


def test_s3_in_and_out_match_a_local_run(tmp_path: Path, store, small_model: Path) -> None:
    store.put(str(small_model), f"{BUCKET}/in/model.safetensors")
    r = run_subprocess("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/model.safetensors", f"s3://{BUCKET}/out/model.safetensors",
                       "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert store.cat(f"{BUCKET}/out/model.safetensors") == _local_run(tmp_path, small_model)
    assert not pending_uploads(store, BUCKET)
    code, err = _cli("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/model.safetensors", f"s3://{BUCKET}/out/model.safetensors")
    assert code == 2 and err.strip().splitlines() == [
        f"fp8stream: error: s3://{BUCKET}/out/model.safetensors: exists (use --force to replace it)"]
    code, err = _cli("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/model.safetensors", f"s3://{BUCKET}/out/model.safetensors",
                     "--force", "--device", "cpu", "--no-progress")
    assert code == 0, err


def test_zstd_in_and_out_of_s3(tmp_path: Path, store) -> None:
    """Compressed both ways, an output larger than the self-check's shadow tail (8 MB)."""
    src = tmp_path / "z.safetensors"
    write_checkpoint(str(src), example_tensors(hidden=384, blocks=2))
    store.pipe(f"{BUCKET}/in/model.safetensors.zst", zstandard.ZstdCompressor().compress(src.read_bytes()))
    code, err = _cli("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/model.safetensors.zst",
                     f"s3://{BUCKET}/out/model.safetensors.zst", "--device", "cpu", "--no-progress")
    assert code == 0, err
    packed = store.cat(f"{BUCKET}/out/model.safetensors.zst")
    assert len(packed) > 9 << 20
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed) == _local_run(tmp_path, src)


def test_multipart_output_and_stale_upload_aborted(tmp_path: Path, store) -> None:
    """An output over 5 MB goes up in parts; an upload left by a killed run is aborted."""
    src = tmp_path / "big.safetensors"
    write_checkpoint(str(src), example_tensors(hidden=384, blocks=2))
    assert src.stat().st_size > 12 << 20
    store.put(str(src), f"{BUCKET}/in/big.safetensors")
    left = store.call_s3("create_multipart_upload", Bucket=BUCKET, Key="out/big.safetensors")
    assert pending_uploads(store, BUCKET)
    code, err = _cli("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/big.safetensors", f"s3://{BUCKET}/out/big.safetensors",
                     "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert left["UploadId"] and not pending_uploads(store, BUCKET)
    assert store.cat(f"{BUCKET}/out/big.safetensors") == _local_run(tmp_path, src)


def test_truncated_input_leaves_no_object_and_no_upload(tmp_path: Path, store) -> None:
    src = tmp_path / "t.safetensors"
    write_checkpoint(str(src), example_tensors(hidden=384, blocks=2))
    data = src.read_bytes()
    store.pipe(f"{BUCKET}/in/truncated.safetensors", data[: len(data) - 1000])
    code, err = _cli("calibrate", "--method", "simulate", f"s3://{BUCKET}/in/truncated.safetensors",
                     f"s3://{BUCKET}/out/truncated.safetensors", "--device", "cpu", "--no-progress")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "truncated" in err or "ends" in err
    assert not store.exists(f"{BUCKET}/out/truncated.safetensors")
    assert not pending_uploads(store, BUCKET)


def test_sigterm_mid_upload_discards_it(tmp_path: Path, store) -> None:
    src = tmp_path / "slow.safetensors"
    write_checkpoint(str(src), example_tensors(hidden=512, blocks=3))
    store.put(str(src), f"{BUCKET}/in/slow.safetensors")
    proc = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", f"s3://{BUCKET}/in/slow.safetensors",
                             f"s3://{BUCKET}/out/slow.safetensors", "--device", "cpu", "--no-progress",
                             "--sim-mode", "hybrid"], env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pending_uploads(store, BUCKET) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its upload could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith("fp8stream: error:"), err
    assert not store.exists(f"{BUCKET}/out/slow.safetensors")
    assert not pending_uploads(store, BUCKET)


def test_memory_store_through_the_python_api(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    import fsspec
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    mem = fsspec.filesystem("memory")
    mem.pipe("/api/in.safetensors", src.read_bytes())
    report = calibrate_file(RewriteOptions(input="memory://api/in.safetensors", output="memory://api/out.safetensors",
                                           settings=CalibrationSettings(method="simulate")))
    assert report.status == "ok"
    assert mem.cat("/api/out.safetensors") == _local_run(tmp_path, src)


def test_missing_driver_and_bad_options_are_one_line(tmp_path: Path, small_model: Path) -> None:
    code, err = _cli("calibrate", "--method", "simulate", "nosuchproto://x/model.safetensors", tmp_path / "o.safetensors")
    assert code == 2 and err.strip() == \
        "fp8stream: error: nosuchproto://x/model.safetensors: unknown protocol nosuchproto://"
    code, err = _cli("calibrate", "--method", "simulate", small_model, "s3://b/o.safetensors", "--storage-options", "{bad")
    assert code == 2 and err.startswith("fp8stream: error: --storage-options: not JSON")


def test_a_retried_zoo_task_finds_its_own_committed_output(tmp_path: Path, store, small_model: Path) -> None:
    """A worker killed after its upload was committed: Ray runs the task again, which must see
    the object it wrote (same input identity and options in its metadata) and report ok, not
    fail on create-exclusive."""
    from fp8stream.commands.zoo import zoo_settings
    from fp8stream.zoo.identity import output_metadata
    from fp8stream.zoo.listing import ZooItem, probe
    from fp8stream.zoo.task import run_one

    store.put(str(small_model), f"{BUCKET}/retry/in.safetensors")
    settings, digest = zoo_settings("simulate", "bound", 4.0, 64, 0, "cpu", None)
    item = ZooItem(f"s3://{BUCKET}/retry/in.safetensors", f"s3://{BUCKET}/retry/out.safetensors")
    probe(item, None)
    options = RewriteOptions(input=item.input, output=item.output, settings=settings)
    meta = output_metadata(item.identity, digest)
    first = run_one(options, item.identity.tag, meta, {})
    assert first.status == "ok", first.error
    written = store.cat(f"{BUCKET}/retry/out.safetensors")
    again = run_one(options, item.identity.tag, meta, {})
    assert again.status == "ok", again.error
    assert store.cat(f"{BUCKET}/retry/out.safetensors") == written
    other = run_one(options, item.identity.tag, dict(meta, **{k: "other" for k in meta}), {})
    assert other.status == "failed" and "exists" in (other.error or "")  # not this task's: refused
