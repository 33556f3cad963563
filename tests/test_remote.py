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

from fp8stream.cli import main
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.synthetic.example import example_tensors
from tests.conftest import run_subprocess, small_model_tensors, subprocess_env  # noqa: F401
from tests.s3_endpoint import pending_uploads, s3, s3_endpoint  # noqa: F401 (fixture)
from tests.shard_files import shard_file

BUCKET = "remote-tests"


@pytest.fixture(scope="module")
def store(s3_endpoint: str):  # noqa: F811
    fs = s3(s3_endpoint)
    fs.mkdir(BUCKET)
    return fs


def _local_run(tmp_path: Path, src: Path, name: str = "local.safetensors") -> bytes:
    """The same calibration of a local file (in-process: torch is loaded here already)."""
    out = tmp_path / name
    report = calibrate_file(RewriteOptions(input=str(src), output=str(out),
                                           settings=CalibrationSettings(method="simulate", device="cpu")))
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
    import fsspec
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    mem = fsspec.filesystem("memory")
    mem.pipe("/api/in.safetensors", src.read_bytes())
    report = calibrate_file(RewriteOptions(input="memory://api/in.safetensors", output="memory://api/out.safetensors",
                                           settings=CalibrationSettings(method="simulate")))
    assert report.status == "ok"
    assert mem.cat("/api/out.safetensors") == _local_run(tmp_path, src)
    mem.pipe("/api/cut.safetensors", src.read_bytes()[:-100])  # fsspec's memory store publishes at open:
    with pytest.raises(Exception, match="truncated|ends"):  # ours must not
        calibrate_file(RewriteOptions(input="memory://api/cut.safetensors", output="memory://api/cut-out.safetensors"))
    assert not mem.exists("/api/cut-out.safetensors")
    code, err = _cli("calibrate", src, "memory://api/v.safetensors", "--verify")
    assert code == 2 and "--verify re-reads the whole output" in err and not mem.exists("/api/v.safetensors")


def test_missing_driver_and_bad_options_are_one_line(tmp_path: Path, small_model: Path) -> None:
    code, err = _cli("calibrate", "--method", "simulate", "nosuchproto://x/model.safetensors",
                     tmp_path / "o.safetensors")
    assert code == 2 and err.strip() == \
        "fp8stream: error: nosuchproto://x/model.safetensors: unknown protocol nosuchproto://"
    code, err = _cli("calibrate", "--method", "simulate", small_model, "s3://b/o.safetensors",
                     "--storage-options", "{bad")
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
    first = run_one(options, item.pins, item.record_url, meta, {})
    assert first.status == "ok", first.error
    written = store.cat(f"{BUCKET}/retry/out.safetensors")
    again = run_one(options, item.pins, item.record_url, meta, {})
    assert again.status == "ok", again.error
    assert store.cat(f"{BUCKET}/retry/out.safetensors") == written
    other = run_one(options, item.pins, item.record_url, dict(meta, **{k: "other" for k in meta}), {})
    assert other.status == "failed" and "exists" in (other.error or "")  # not this task's: refused


def test_sharded_folder_and_index_in_s3_match_the_local_sharded_run(tmp_path: Path, store, small_model: Path) -> None:
    """s3://b/model/ (or its index URL) in, a folder of shards out (s3:// or local): the same
    bytes as the local sharded run; the index is written last, nothing is left half-done."""
    folder = shard_file(small_model, tmp_path / "sharded")
    for shard in folder.iterdir():
        store.put(str(shard), f"{BUCKET}/shin/{shard.name}")
    local = tmp_path / "local-out"
    assert calibrate_file(RewriteOptions(input=str(folder), output=str(local),
                                         settings=CalibrationSettings(method="simulate", device="cpu"))).status == "ok"
    expected = {p.name: p.read_bytes() for p in local.iterdir()}
    assert len(expected) == 3
    code, err = _cli("calibrate", f"s3://{BUCKET}/shin/", f"s3://{BUCKET}/shout", "--method", "simulate",
                     "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert {n: store.cat(f"{BUCKET}/shout/{n}") for n in expected} == expected
    assert sorted(p.rsplit("/", 1)[1] for p in store.find(f"{BUCKET}/shout")) == sorted(expected)
    assert not pending_uploads(store, BUCKET)
    code, err = _cli("calibrate", f"s3://{BUCKET}/shin/", f"s3://{BUCKET}/shout")
    assert code == 2 and err.strip() == f"fp8stream: error: s3://{BUCKET}/shout: exists (use --force to replace it)"
    code, err = _cli("calibrate", f"s3://{BUCKET}/shin/model.safetensors.index.json", tmp_path / "from-index",
                     "--method", "simulate", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "from-index").iterdir()} == expected
    store.rm(f"{BUCKET}/shin/model-00002-of-00002.safetensors")
    code, err = _cli("calibrate", f"s3://{BUCKET}/shin/", f"s3://{BUCKET}/shout2", "--device", "cpu")
    assert code == 1 and err.strip().endswith("shard model-00002-of-00002.safetensors is missing"), err
    assert not store.exists(f"{BUCKET}/shout2")


def test_inspect_and_verify_read_urls_by_ranges_without_torch(tmp_path: Path, store, small_model: Path) -> None:
    from tests.test_structure import _PROBE
    store.put(str(small_model), f"{BUCKET}/insp/in.safetensors")
    out = tmp_path / "out.safetensors"
    _local_run(tmp_path, small_model, out.name)
    store.put(str(out), f"{BUCKET}/insp/out.safetensors")
    for args in (["inspect", f"s3://{BUCKET}/insp/out.safetensors"],
                 ["verify", f"s3://{BUCKET}/insp/in.safetensors", f"s3://{BUCKET}/insp/out.safetensors"]):
        r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=subprocess_env())
        assert r.stderr.strip().splitlines()[-1] == "PROBE code=0 heavy=", r.stderr[-2000:]
        local = run_subprocess(*[a.replace(f"s3://{BUCKET}/insp/", str(tmp_path) + "/") if a.endswith("out.safetensors")
                                 else a.replace(f"s3://{BUCKET}/insp/in.safetensors", str(small_model)) for a in args])
        assert r.stdout.replace(f"s3://{BUCKET}/insp/out.safetensors", str(out)).replace(
            f"s3://{BUCKET}/insp/in.safetensors", str(small_model)) == local.stdout
    code, err = _cli("inspect", f"s3://{BUCKET}/insp/missing.safetensors")
    assert code == 1 and err.strip() == f"fp8stream: error: s3://{BUCKET}/insp/missing.safetensors: no such object"


def test_forward_pass_reads_an_s3_input_by_ranged_requests(tmp_path: Path, store, monkeypatch) -> None:
    """--method auto (the default) on an s3:// input runs the forward pass, its rows read by
    ranged GETs pinned by ETag, and gives the same bytes as the local run."""
    import s3fs
    sys.path.insert(0, str(Path(__file__).parent))
    import forward_tiny as ft

    src = tmp_path / "flux.safetensors"
    _, state, _ = ft.tiny("flux")
    ft.write(state, src, "")
    store.put(str(src), f"{BUCKET}/fwd/flux.safetensors")
    etag = store.info(f"{BUCKET}/fwd/flux.safetensors")["ETag"]
    args = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
            "--device", "cpu", "--no-progress", "--json"]
    gets: list[dict] = []  # every GET the run sends: what the store is asked for
    call_s3 = s3fs.S3FileSystem._call_s3

    async def recording(self, method, *args, **kwargs):
        if method == "get_object":
            gets.append(kwargs)
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recording)
    for method in ("auto",):
        local, remote = tmp_path / f"local-{method}.safetensors", tmp_path / f"remote-{method}.safetensors"
        assert _cli("calibrate", src, local, "--method", method, *args)[0] == 0
        gets.clear()
        result = CliRunner().invoke(main, ["calibrate", f"s3://{BUCKET}/fwd/flux.safetensors", str(remote),
                                           "--method", method, *args])
        assert result.exit_code == 0, result.stderr
        assert "bound method" not in result.stdout
        assert remote.read_bytes() == local.read_bytes()
        ours = [g for g in gets if g.get("Key") == "fwd/flux.safetensors"]
        assert ours and all(g.get("IfMatch") == etag for g in ours), ours  # each read pinned to the object read
        ranges = [tuple(map(int, g["Range"].removeprefix("bytes=").split("-"))) for g in ours]
        assert len(ranges) == len(ours)  # never the whole object in one unranged GET
        # the pass reads its weights by positioned reads: many ranges, each far smaller than the file
        small = [r for r in ranges if r[1] - r[0] + 1 < src.stat().st_size // 4]
        assert len(small) >= len(ft.fp8_linears(state)), ranges


def test_a_zoo_retry_replaces_the_shards_its_killed_attempt_committed(tmp_path: Path, store, small_model: Path) -> None:
    """A worker killed after committing a sharded output's shards but before its index: the
    retry sees shards that carry its own record (and no index) and replaces them; shards
    someone else wrote are refused as an existing output."""
    from fp8stream.commands.zoo import zoo_settings
    from fp8stream.zoo.identity import output_metadata
    from fp8stream.zoo.listing import ZooItem, probe
    from fp8stream.zoo.task import run_one

    for shard in shard_file(small_model, tmp_path / "sharded").iterdir():
        store.put(str(shard), f"{BUCKET}/zshard/in/{shard.name}")
    settings, digest = zoo_settings("simulate", "bound", 4.0, 64, 0, "cpu", None)
    item = ZooItem(f"s3://{BUCKET}/zshard/in", f"s3://{BUCKET}/zshard/out")
    probe(item, None)
    options = RewriteOptions(input=item.input, output=item.output, settings=settings)
    meta = output_metadata(item.identity, digest)
    assert run_one(options, item.pins, item.record_url, meta, {}).status == "ok"
    written = {p: store.cat(p) for p in store.find(f"{BUCKET}/zshard/out")}
    store.rm(item.record_url.removeprefix("s3://"))  # killed before the index was committed
    again = run_one(options, item.pins, item.record_url, meta, {})
    assert again.status == "ok" and again.bytes_written > 0, again.error
    assert {p: store.cat(p) for p in store.find(f"{BUCKET}/zshard/out")} == written
    store.rm(item.record_url.removeprefix("s3://"))
    store.pipe(f"{BUCKET}/zshard/out/model-00001-of-00002.safetensors", b"someone else's")
    other = run_one(options, item.pins, item.record_url, meta, {})
    assert other.status == "failed" and "exists" in (other.error or "")
