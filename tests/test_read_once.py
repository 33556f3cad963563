"""scripts/read_once.py, issue 24's one-read measure: its mechanism, not the bar.

The bar needs root (dropping the page cache, a memory cgroup) and a block device; CI has neither
for sure, and what `ru_inblock` counts depends on the filesystem (tmpfs and overlays count
nothing). So these tests check what does not: the refusal, the warm cgroup-less path with its
figures and clean-up, the bound from the header, and the child entering its group before exec.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import read_once  # noqa: E402
import read_once_measure  # noqa: E402
from fp8stream.memory import memory_estimate  # noqa: E402
from read_once_measure import NotMeasurable, measure  # noqa: E402

# A stand-in for `fp8stream calibrate IN OUT`: reads IN, writes OUT, exits with the code given.
FAKE_CALIBRATE = ("import sys; data = open(sys.argv[1], 'rb').read(); open(sys.argv[2], 'wb').write(data); "
                  "sys.stderr.write('fake run'); sys.exit(int(sys.argv[3]))")


def fake_calibrate(code: int):
    return lambda src, dst, method, device: [sys.executable, "-c", FAKE_CALIBRATE, src, dst, str(code)]


def test_a_run_that_cannot_be_made_cold_is_refused_in_one_line(small_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(read_once, "drop_caches", lambda: False)  # what a user without root gets
    monkeypatch.setattr(read_once, "calibrate_command", fake_calibrate(0))
    code = read_once.main(["--input", str(small_model), "--workdir", str(tmp_path), "--only", "unlimited"])
    err = capsys.readouterr().err.strip()
    assert code == read_once.EXIT_REFUSED
    assert err.count("\n") == 0 and "needs root" in err and "--warm" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # nothing ran, nothing left


def test_no_memory_cgroup_or_no_input_is_refused_in_one_line(small_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(read_once, "drop_caches", lambda: False)
    monkeypatch.setattr(read_once, "calibrate_command", fake_calibrate(0))
    monkeypatch.setattr(read_once_measure, "V2_ROOT", str(tmp_path / "no-v2"))  # a host with neither tree
    monkeypatch.setattr(read_once_measure, "V1_MEMORY", str(tmp_path / "no-v1"))
    assert read_once.main(["--input", str(small_model), "--workdir", str(tmp_path), "--warm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no cgroup v1 memory controller" in err and "--only unlimited" in err
    assert read_once.main(["--input", str(tmp_path / "missing.safetensors"), "--warm", "--only", "unlimited"]) == 2
    assert capsys.readouterr().err.strip() == f"read_once: {tmp_path / 'missing.safetensors'}: no such file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("child_exit", [0, 3])
def test_a_warm_run_without_a_cgroup_reports_the_child(small_model, tmp_path, monkeypatch, capsys, child_exit):
    monkeypatch.setattr(read_once, "drop_caches", lambda: False)
    monkeypatch.setattr(read_once, "calibrate_command", fake_calibrate(child_exit))
    code = read_once.main(["--input", str(small_model), "--workdir", str(tmp_path), "--only", "unlimited",
                           "--warm", "--json"])
    result = json.loads(capsys.readouterr().out)
    (run,) = result["runs"]
    assert code == (0 if child_exit == 0 else read_once.EXIT_RUN_FAILED)
    assert run["run"] == "unlimited" and run["limit_bytes"] is None and run["cold"] is False
    assert run["exit_code"] == child_exit
    assert result["input_bytes"] == small_model.stat().st_size
    assert run["read_ratio"] == run["read_bytes"] / result["input_bytes"]
    assert ("stderr_tail" in run) == (child_exit != 0) and run.get("stderr_tail", "fake run") == "fake run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # the output removed


def test_keep_keeps_the_last_runs_output(small_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(read_once, "drop_caches", lambda: False)
    monkeypatch.setattr(read_once, "calibrate_command", fake_calibrate(0))
    assert read_once.main(["--input", str(small_model), "--workdir", str(tmp_path), "--warm", "--only", "unlimited",
                           "--keep"]) == 0
    assert (tmp_path / "out.safetensors").read_bytes() == small_model.read_bytes()  # what the (fake) run wrote


def test_the_bound_is_twice_the_largest_fp8_layer_as_f32_plus_1_gb(small_model):
    bound = read_once.run_bound(str(small_model))
    # small_model's largest FP8 linears: blocks.0.mlp.0 (128 x 32) and blocks.0.mlp.2 (32 x 128)
    assert bound.bytes == 2 * 4 * 128 * 32 + 10**9
    assert bound.largest_fp8_layer in ("blocks.0.mlp.0.weight", "blocks.0.mlp.2.weight")
    assert bound.tool_estimate_bytes == memory_estimate(str(small_model), None)


def test_the_child_enters_its_group_before_exec_and_its_rusage_is_its_own(tmp_path):
    procs = tmp_path / "cgroup.procs"
    allocate = "import os, sys; block = bytearray(200 << 20); sys.stderr.write(str(os.getpid())); sys.exit(7)"
    measured = measure([sys.executable, "-c", allocate], dict(os.environ), str(procs))
    assert measured.exit_code == 7
    assert procs.read_text() == measured.stderr_tail  # the exec'd program's pid: moved before it ran
    assert measured.peak_rss_bytes >= 200 << 20
    with pytest.raises(NotMeasurable, match="cannot move the run into"):
        measure([sys.executable, "-c", "pass"], dict(os.environ), str(tmp_path / "missing" / "cgroup.procs"))


def test_the_input_devices_counter_is_read_where_the_kernel_keeps_one(tmp_path, monkeypatch):
    """--isolate's figure: sectors read x 512 from /sys/dev/block/MAJ:MIN/stat of the file's device;
    None where there is no such file (tmpfs, overlay), never an error."""
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"x")
    dev = os.stat(target).st_dev
    stats = {f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat": "  11 0 4096 7 0 0 0 0 0 0 0"}
    monkeypatch.setattr(read_once_measure, "_read", lambda path: stats.get(path))
    assert read_once_measure.device_read_bytes(str(target)) == 4096 * 512
    stats.clear()
    assert read_once_measure.device_read_bytes(str(target)) is None


def test_isolate_refuses_in_one_line_and_leaves_nothing_where_no_loop_device_can_be_made(
        small_model, tmp_path, monkeypatch, capsys):
    def refused(cmd, **kwargs):
        raise read_once_measure.subprocess.CalledProcessError(1, cmd, stderr=b"mount: permission denied")

    monkeypatch.setattr(read_once, "drop_caches", lambda: False)
    monkeypatch.setattr(read_once, "calibrate_command", fake_calibrate(0))
    monkeypatch.setattr(read_once_measure.subprocess, "run", refused)
    code = read_once.main(["--input", str(small_model), "--workdir", str(tmp_path), "--only", "unlimited",
                           "--warm", "--isolate"])
    err = capsys.readouterr().err.strip()
    assert code == read_once.EXIT_REFUSED
    assert err.count("\n") == 0 and "loop device" in err and "permission denied" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
