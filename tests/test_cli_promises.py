"""Options the docs promise, each through the CLI as a user runs it: --report FILE, a checkpoint
refused to a terminal, sharded input with --verify and --zstd, --rule mse / --percentile /
--map (with --method stats), --forward-margin, and --jobs waiting for its memory budget."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from conftest import child_pids, open_fifo_for_writing, run_cli, subprocess_env
from fp8stream.io.compression import MAX_WINDOW_BYTES
from fp8stream.io.reader import LazyFile
from fp8stream.memory import BASE_MEMORY, MB, memory_estimate
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.scales.rules import amax_from_histogram
from shard_files import sharded_model

LAYERS = ("blocks.0.attn.qkv", "blocks.0.mlp.0", "blocks.0.mlp.2")  # conftest's small model
LO_LOG2, BINS_PER_OCTAVE, BINS = -24, 4, 192


def _scales(result) -> dict[str, float]:
    assert result.exit_code == 0, result.output
    return {layer["name"]: layer["scale"] for layer in json.loads(result.stdout.strip().splitlines()[-1])["layers"]}


def test_report_file_is_appended_run_after_run(small_model: Path, tmp_path: Path) -> None:
    report = tmp_path / "runs.log"
    report.write_text("earlier line\n")
    assert run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "a.safetensors",
                   "--report", report).exit_code == 0
    first = report.read_text()
    assert first.startswith("earlier line\n") and "a.safetensors" in first and len(first) > len("earlier line\n") + 40
    assert run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "b.safetensors",
                   "--report", report).exit_code == 0
    second = report.read_text()
    assert second.startswith(first) and "b.safetensors" in second[len(first):]


def test_a_report_file_in_a_missing_folder_is_one_line(small_model: Path, tmp_path: Path) -> None:
    r = run_cli("calibrate", "--method", "simulate", small_model, tmp_path / "a.safetensors",
                "--report", tmp_path / "no-such-folder" / "runs.log")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("fp8stream: error: --report ")


def test_a_checkpoint_is_refused_to_a_terminal(small_model: Path) -> None:
    """`fp8stream calibrate IN -` with stdout a terminal: one line, exit 2, no bytes to the tty."""
    leader, follower = pty.openpty()
    seen = b""
    try:
        p = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", str(small_model),
                              "-"],
                             stdout=follower, stderr=subprocess.PIPE, env=subprocess_env())
        os.close(follower)
        while True:  # what reaches the terminal, read as it comes (EIO once the child has closed it)
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        stderr = p.stderr.read().decode()
        p.wait(timeout=120)
    finally:
        os.close(leader)
    assert p.returncode == 2, stderr
    assert stderr.strip().splitlines() == [
        "fp8stream: error: refusing to write a checkpoint to a terminal: redirect stdout or name OUT"]
    assert seen == b""


def test_sharded_input_with_verify_and_zstd(tmp_path: Path) -> None:
    folder = sharded_model(tmp_path / "in")
    plain = run_cli("calibrate", "--method", "simulate", "--verify", "--json", folder, tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    verify = json.loads(plain.stdout)["verify"]
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) == 2 and all(f"{s}: " in verify for s in shards), verify
    assert verify.count("0 unexpected") == 2, verify
    packed = run_cli("calibrate", "--method", "simulate", "--verify", "--zstd", "--json", folder,
                     "--out-dir", tmp_path / "z")
    assert packed.exit_code == 0, packed.output
    assert json.loads(packed.stdout)["verify"].count("0 unexpected") == 2
    out = Path(json.loads(packed.stdout)["output"])
    for shard in shards:  # each shard compressed, and the same bytes as the plain run once unpacked
        data = (out / shard).read_bytes()
        assert data[:4] == b"\x28\xb5\x2f\xfd", shard
        unpacked = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        assert unpacked == (tmp_path / "plain" / shard).read_bytes()


def _stats_file(path: Path, names: dict[str, str]) -> dict[str, list[int]]:
    """Recorded statistics for the small model's layers (renamed by `names`): most values spread
    over 1/16..1, a few outliers up to 8, so max, percentile and mse give different scales."""
    layers, hists = {}, {}
    for i, layer in enumerate(LAYERS):
        hist = [0] * BINS
        first = (0 - 4 - LO_LOG2) * BINS_PER_OCTAVE  # the bin of 2^-4
        for b in range(first, first + 4 * BINS_PER_OCTAVE):
            hist[b] = 10_000
        hist[(3 - LO_LOG2) * BINS_PER_OCTAVE - 1] = 3  # just under 8
        amax = 8.0 - i
        layers[names.get(layer, layer)] = {"amax": amax, "calls": 1, "count": sum(hist), "zeros": 0, "hist": hist}
        hists[layer] = (amax, hist)
    path.write_text(json.dumps({"format": "fp8stream.stats", "version": 1, "layers": layers,
                                "histogram": {"lo_log2": LO_LOG2, "bins_per_octave": BINS_PER_OCTAVE, "bins": BINS}}))
    return hists


def test_rule_mse_and_percentile_apply_to_recorded_statistics(small_model: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    recorded = _stats_file(stats, {})

    def run(*args: str) -> dict[str, float]:
        return _scales(run_cli("calibrate", small_model, tmp_path / f"o{len(list(tmp_path.iterdir()))}.safetensors",
                               "--method", "stats", "--stats", stats, "--stats-margin", "1", "--json", *args))

    by_max, by_mse = run("--rule", "max"), run("--rule", "mse")
    p50, p9999 = run("--rule", "percentile", "--percentile", "50"), run("--rule", "percentile")
    for layer, (amax, hist) in recorded.items():
        assert by_max[layer] == pytest.approx(amax / 448, rel=1e-6)
        expected = {"mse": by_mse, "percentile50": p50, "percentile99.99": p9999}
        for key, got in expected.items():
            rule, pct = ("mse", 99.99) if key == "mse" else ("percentile", float(key.removeprefix("percentile")))
            want = amax_from_histogram(rule, amax, hist, LO_LOG2, BINS_PER_OCTAVE, pct) / 448
            assert got[layer] == pytest.approx(want, rel=1e-6), (layer, key)
        # what the rules are for: the outliers do not set the scale, and the median sits lower
        assert p50[layer] < p9999[layer] < by_max[layer] and by_mse[layer] < by_max[layer], layer


def test_map_pairs_through_the_cli(small_model: Path, tmp_path: Path) -> None:
    """Stats recorded under the user's own module names reach the checkpoint's layers by --map."""
    names = {"blocks.0.attn.qkv": "my.attention", "blocks.0.mlp.0": "my.up", "blocks.0.mlp.2": "my.down"}
    stats = tmp_path / "stats.json"
    recorded = _stats_file(stats, names)
    pairs = tmp_path / "map.txt"
    pairs.write_text("".join(f"{mine} {layer}\n" for layer, mine in names.items()))
    unmapped = run_cli("calibrate", small_model, tmp_path / "u.safetensors", "--method", "stats", "--stats", stats)
    assert unmapped.exit_code != 0 and not (tmp_path / "u.safetensors").exists()
    scales = _scales(run_cli("calibrate", small_model, tmp_path / "m.safetensors", "--method", "stats",
                             "--stats", stats, "--stats-margin", "1", "--map", pairs, "--json"))
    assert scales == {layer: pytest.approx(amax / 448, rel=1e-6) for layer, (amax, _) in recorded.items()}


def test_forward_margin_scales_the_scales_by_its_factor(tmp_path: Path) -> None:
    import forward_tiny as ft

    src = tmp_path / "flux.safetensors"
    _, state, _ = ft.tiny("flux")
    ft.write(state, src, "")
    args = ["--forward-batch", "2", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
            "--device", "cpu", "--no-progress", "--json", "--method", "forward"]
    reports = {}
    for margin in ("3", "6"):
        r = run_cli("calibrate", src, tmp_path / f"m{margin}.safetensors", "--forward-margin", margin, *args)
        assert r.exit_code == 0, r.output
        reports[margin] = {layer["name"]: layer for layer in json.loads(r.stdout)["layers"]}
    assert reports["3"].keys() == reports["6"].keys()
    doubled = 0
    for name, at3 in reports["3"].items():
        at6 = reports["6"][name]
        if not at3["fp8_activations"]:
            continue
        assert at6["scale"] >= at3["scale"], name
        if at6["scale"] < at6["bound"] / 448 * (1 - 1e-6):  # not capped by the hard bound: exactly x2
            assert at6["scale"] == pytest.approx(2 * at3["scale"], rel=1e-6), name
            doubled += 1
    assert doubled >= 5, reports["6"]


def _workers(pid: int) -> int:
    """The batch's job processes alive now (multiprocessing's spawned children, Linux /proc)."""
    count = 0
    for child in child_pids(pid):
        try:
            count += b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
    return count


def test_jobs_budget_each_file_with_its_methods_estimate(tmp_path: Path, small_model: Path) -> None:
    """--jobs budgets a file with the estimate of its run's method: the default's forward pass
    (torch and diffusers imported, a weight as float32, its read-ahead, the activations) needs
    more than simulate's stream. A --max-memory between the two runs simulate and refuses the
    default before it starts, saying what it needs."""
    default = memory_estimate(str(small_model), None, CalibrationSettings())
    simulate = memory_estimate(str(small_model), None, CalibrationSettings("simulate"))
    assert simulate < default
    budget = simulate + (default - simulate) * 3 // 4  # the parent's RSS comes off it: simulate still fits

    def batch(*method: str) -> tuple[int, dict]:
        out = tmp_path / ("-".join(method) or "default")
        r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", *method, "--jobs", "2", "--max-memory",
                            f"{budget // MB}M", "--json", str(small_model), "--out-dir", str(out)],
                           capture_output=True, text=True, env=subprocess_env())
        return r.returncode, json.loads(r.stdout.splitlines()[0])

    code, doc = batch()
    assert code == 1 and doc["status"] == "failed", doc
    assert f"needs about {default // MB} MB" in doc["error"] and "over --max-memory" in doc["error"]
    code, doc = batch("--method", "simulate")
    assert code == 0 and doc["status"] == "ok", doc


def test_jobs_wait_for_their_memory_budget(tmp_path: Path, small_model: Path) -> None:
    """Three pipes, --jobs 3, a --max-memory that fits one job (a pipe's estimate is the base
    plus zstd's largest window): each job starts only once the one before has ended. Jobs are
    started before any of them can open its pipe, so when a pipe has its reader the running
    jobs are all counted: no timing. Nothing probes a pipe (see conftest's `open_fifo_for_writing`)."""
    estimate = BASE_MEMORY + MAX_WINDOW_BYTES
    budget = estimate + estimate // 2  # the parent's own RSS (tens of MB) comes off it: still one job
    fifos = [tmp_path / f"f{i}.safetensors" for i in range(3)]
    for fifo in fifos:
        os.mkfifo(fifo)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "--jobs", "3",
                          "--max-memory", f"{budget // MB}M", "--json", *map(str, fifos), "--out-dir", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    data = small_model.read_bytes()
    try:
        for i, fifo in enumerate(fifos):
            with open_fifo_for_writing(fifo, p) as writer:
                # job i has its pipe open: no other job process may be alive (one waiting for its
                # own pipe would be counted here too)
                assert _workers(p.pid) == 1, f"job {i}: more jobs running than --max-memory allows"
                writer.write(data)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, stderr
    assert [json.loads(line)["status"] for line in stdout.decode().splitlines()] == ["ok"] * 3
    for fifo in fifos:  # each output a whole checkpoint
        with LazyFile(str(out / fifo.name)) as f:
            assert {t.name for t in f.header.tensors} >= {f"{layer}.input_scale" for layer in LAYERS}
