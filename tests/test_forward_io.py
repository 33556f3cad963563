"""--method forward on every kind of input: batches with --jobs 2, pipes and zstd (spooled),
micro-batches. Tiny models from forward_tiny; each CLI run takes a few seconds."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest

import forward_tiny as ft  # noqa: E402
import fp8stream  # noqa: E402
from conftest import run_cli, run_subprocess  # noqa: E402
from fp8stream.io.reader import LazyFile  # noqa: E402

FORWARD = ["--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8", "--forward-threads", "1",
           "--no-progress"]


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    return ft.comfy_file("flux", tmp_path_factory.mktemp("in"))


def _metadata(path: Path) -> dict:
    with LazyFile(str(path)) as f:
        return json.loads((f.header.metadata or {})["fp8stream.calibration"])


def test_jobs_2_gives_the_bytes_of_jobs_1(flux: Path, tmp_path: Path) -> None:
    """A batch of two files with --jobs 2 (two worker processes, each with cores / 2 torch
    threads) writes the same bytes as --jobs 1: the forward pass pins its own thread count."""
    sd3 = tmp_path / "sd3.safetensors"
    _, state, _ = ft.tiny("sd3")
    ft.write(state, sd3)
    outs = {}
    for jobs in (1, 2):  # --jobs 1 runs in this process (diffusers imported once), --jobs 2 in two workers
        out = tmp_path / f"out{jobs}"
        args = ("calibrate", str(flux), str(sd3), "--out-dir", str(out), "--jobs", str(jobs), *FORWARD)
        p = run_cli(*args) if jobs == 1 else run_subprocess(*args)
        assert (p.exit_code if jobs == 1 else p.returncode) == 0, p.stderr[-2000:]
        outs[jobs] = {f: (out / f).read_bytes() for f in ("flux.safetensors", "sd3.safetensors")}
    assert outs[1] == outs[2]
    meta = _metadata(tmp_path / "out2" / "flux.safetensors")
    assert meta["method"] == "auto" and meta["threads"] == 1
    assert meta["torch"] == version("torch") and meta["diffusers"] == version("diffusers")


def _invoke(*args: str, stdin: bytes | None = None):
    """The CLI in this process, with stdin bytes: exit_code, stdout_bytes, stderr."""
    from click.testing import CliRunner

    from fp8stream.cli import main

    return CliRunner().invoke(main, ["calibrate", *map(str, args)], input=stdin, catch_exceptions=False)


def _no_spool_left(*folders: Path) -> None:
    left = [f"{d}/{n}" for d in folders for n in os.listdir(d) if ".spool." in n]
    assert not left, left


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch) -> Path:
    """$TMPDIR for the spool of a run whose output is stdout."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_stdin_and_zstd_are_spooled_urls_read_by_ranges_all_give_the_file_bytes(flux: Path, tmp_path: Path,
                                                                                 tmpdir_env: Path) -> None:
    import zstandard

    data = flux.read_bytes()
    r = _invoke(str(flux), str(tmp_path / "file.safetensors"), *FORWARD)
    assert r.exit_code == 0, r.stderr
    want = (tmp_path / "file.safetensors").read_bytes()
    zst = tmp_path / "in.safetensors.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(data))
    r = _invoke(str(zst), str(tmp_path / "zst.safetensors"), *FORWARD, "--json")  # spool beside OUT
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "zst.safetensors").read_bytes() == want
    assert any("spooled" in n for n in json.loads(r.stdout)["notes"])
    r = _invoke("-", str(tmp_path / "stdin.safetensors"), *FORWARD, stdin=data)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "stdin.safetensors").read_bytes() == want
    import fsspec

    fsspec.filesystem("memory").pipe("/forward-io/flux.safetensors", data)  # a URL: read by ranges, no spool
    r = _invoke("memory://forward-io/flux.safetensors", str(tmp_path / "url.safetensors"), *FORWARD, "--json")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "url.safetensors").read_bytes() == want
    assert not any("spooled" in n for n in json.loads(r.stdout)["notes"])
    _no_spool_left(tmp_path, tmpdir_env)
    from fp8stream.io.storage import locate
    from fp8stream.pipeline.spool import spool_path

    assert Path(spool_path(locate("-"))).parent == tmpdir_env  # stdout (or a URL): the spool goes to $TMPDIR
    assert Path(spool_path(locate(str(tmp_path / "o.safetensors")))).parent == tmp_path


def test_a_spooled_stdin_prepares_the_forward_pass_once(flux: Path, tmp_path: Path, tmpdir_env: Path,
                                                        monkeypatch) -> None:
    """The forward pass is prepared from the header (diffusers' converter, the model built on meta
    tensors: seconds on a real checkpoint) once per file, on a spooled stdin too: what decided
    that the stream is spooled is what the run uses."""
    import fp8stream.methods.forward.forward_pass as forward_run

    prepared = []
    real_prepare = forward_run.prepare
    monkeypatch.setattr(forward_run, "prepare", lambda header: prepared.append(header) or real_prepare(header))
    r = _invoke(str(flux), str(tmp_path / "file.safetensors"), *FORWARD)
    assert r.exit_code == 0, r.stderr
    assert len(prepared) == 1
    r = _invoke("-", str(tmp_path / "stdin.safetensors"), *FORWARD, "--json", stdin=flux.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert any("spooled" in n for n in json.loads(r.stdout)["notes"])
    assert len(prepared) == 2  # once for the file, once for the stream
    assert (tmp_path / "stdin.safetensors").read_bytes() == (tmp_path / "file.safetensors").read_bytes()
    _no_spool_left(tmp_path, tmpdir_env)


def test_out_is_checked_once_before_a_stream_is_spooled(flux: Path, tmp_path: Path) -> None:
    """OUT's refusals come before the stream is spooled, against the input the user named: a
    zstd file given as its own OUT is refused as with --no-spool (the spool, not the file, was
    compared before), and nothing is spooled or written."""
    import zstandard

    zst = tmp_path / "in.safetensors.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(flux.read_bytes()))
    before = zst.read_bytes()
    for spool in ("--spool", "--no-spool"):
        r = _invoke(str(zst), str(zst), "--force", spool, *FORWARD)
        assert r.exit_code == 2 and "output is the input" in r.stderr, r.stderr
    assert zst.read_bytes() == before
    _no_spool_left(tmp_path)


def test_no_spool_is_left_after_a_failure(flux: Path, tmp_path: Path, tmpdir_env: Path, monkeypatch) -> None:
    data = flux.read_bytes()
    out = tmp_path / "out.safetensors"
    r = _invoke("-", str(out), *FORWARD, stdin=data[: len(data) - 1000])  # truncated while spooling
    assert r.exit_code == 1 and "truncated" in r.stderr, r.stderr
    assert not out.exists()
    _no_spool_left(tmp_path, tmpdir_env)
    import fp8stream.commands.common as common
    import fp8stream.methods.forward.forward_pass as forward_run
    from fp8stream.errors import Interrupted

    def interrupted(source, prepared, settings):  # SIGTERM during the forward pass, after the spool
        assert any(".spool." in n for n in os.listdir(tmp_path))
        raise Interrupted(15)

    monkeypatch.setattr(forward_run, "run", interrupted)
    monkeypatch.setattr(common, "_exit_interrupted", lambda message, code: sys.exit(code))  # not os._exit here
    r = _invoke("-", str(out), *FORWARD, stdin=data)
    assert r.exit_code == 143, r.stderr
    assert not out.exists()
    _no_spool_left(tmp_path, tmpdir_env)


def test_no_spool_gives_the_bound_and_says_so_per_layer(flux: Path, tmp_path: Path) -> None:
    data = flux.read_bytes()
    r = _invoke("-", str(tmp_path / "a.safetensors"), *FORWARD, "--no-spool", "--json", stdin=data)
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert {layer["method"] for layer in report["layers"]} == {"auto"}
    assert all(any("--no-spool" in w for w in layer["warnings"]) for layer in report["layers"])
    assert any("drop --no-spool" in a["fix"] for a in report["advice"])
    r = _invoke("-", str(tmp_path / "f.safetensors"), *FORWARD, "--method", "forward", "--no-spool", "--json",
                stdin=data)
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    for layer in report["layers"]:  # the bound where it is a proof, else weight-only: each says why
        assert any("not reached by the forward pass (the input is a stream and --no-spool" in w
                   for w in layer["warnings"]), layer
    assert all("--no-spool" in e["reason"] for e in report["excluded"])
    _no_spool_left(tmp_path)


def test_why_no_spool_kept_the_pass_from_running_is_spelled_once() -> None:
    """auto and forward say the same reason; one module spells it (auto adds what the flag prevents)."""
    package = Path(fp8stream.__file__).parent
    spelled = [p.relative_to(package) for p in package.rglob("*.py") if "--no-spool was given" in p.read_text()]
    assert len(spelled) == 1, spelled


def test_micro_batches_read_each_weight_once_and_see_the_same_samples(flux: Path) -> None:
    """Any split of the batch feeds the model the whole batch's samples; every micro-batch passes
    a Linear while its weight is loaded (one weight live, each read once); the amax agree with
    the whole batch's to float rounding (matmuls of other sizes round differently)."""
    import torch

    from fp8stream.families import by_name
    from fp8stream.families.samples import SamplePlan
    from fp8stream.io.source import TensorSource
    from fp8stream.methods.forward.forward_pass import PassSettings, prepare, run

    fam = by_name("flux").model
    with LazyFile(str(flux)) as f:
        header = f.header
    prepared = prepare(header)
    plan = SamplePlan(3, 16, 8, seed=5)
    whole = fam.inputs(prepared.config, plan)
    parts = [fam.inputs(prepared.config, p) for p in plan.split(2)]
    for key, value in whole.items():
        if key not in ("img_ids", "txt_ids"):
            assert torch.equal(torch.cat([p[key] for p in parts]), value), key
    results = {}
    for micro in (1, None):
        with TensorSource.for_file(str(flux), header) as src:
            results[micro] = run(src, prepared, PassSettings(batch=3, image_tokens=16, text_tokens=8, threads=1,
                                                                micro_batch=micro))
    one, all_ = results[1], results[None]
    assert one.peak_live == 1 and one.weights_read == all_.weights_read == len(all_.module_amax)
    assert one.amax.keys() == all_.amax.keys()
    for name, a in all_.amax.items():
        assert one.amax[name] == pytest.approx(a, rel=1e-5), name
    # the conditioning path, in execution order: the same whatever the split, and the same as
    # the pass on meta tensors found from the header alone (which decides the layout)
    from fp8stream.methods.forward.conditioning import from_shapes

    path = from_shapes(prepared)
    assert one.per_sample == all_.per_sample == list(path.order)
    bare = [n.split("model.diffusion_model.")[-1] for n in all_.per_sample]
    assert bare[:2] == ["time_in.in_layer.weight", "time_in.out_layer.weight"]
    assert bare[-1] == "final_layer.adaLN_modulation.1.weight" and len(bare) == len(set(bare))
    # the layers that follow the step's time: the timestep embedder and every modulation, not
    # the guidance or pooled-text embedders
    step = {n.split("model.diffusion_model.")[-1] for n in path.per_step}
    assert step == {b for b in bare if not b.startswith(("guidance_in.", "vector_in."))}, sorted(step)


def test_lockstep_runs_in_turn_and_stops_every_micro_batch_on_an_error() -> None:
    from fp8stream.methods.forward.lockstep import Lockstep

    order: list[tuple[int, int]] = []
    step = Lockstep(3)

    def call(fail_at: int | None = None):
        for k in range(4):
            if step.index() == 1 and k == fail_at:
                raise ValueError("boom")
            order.append((k, step.index()))
            step.hand_over()

    step.run([call, call, call])
    assert order == [(k, i) for k in range(4) for i in range(3)]  # each "Linear" on every micro-batch in turn
    failing = Lockstep(3)
    step = failing
    with pytest.raises(ValueError, match="boom"):
        failing.run([lambda: call(2)] * 3)


def test_default_micro_batch_is_the_whole_default_batch() -> None:
    from fp8stream.methods.settings import CalibrationSettings, micro_batch_for

    s = CalibrationSettings()
    assert micro_batch_for(s.forward_batch, s.forward_tokens, s.forward_text_tokens) == s.forward_batch == 4
    assert micro_batch_for(8, 4096, 512) == 1 and micro_batch_for(16, 256, 128) == 5



def test_model_code_that_fails_on_meta_tensors_leaves_the_conditioning_path_to_the_real_pass(flux, tmp_path,
                                                                                             monkeypatch):
    """The pass on meta tensors is a probe: model code that cannot run there (an MoE's routing,
    or any other failure) gives no path, and the real pass then runs before the header and
    finds the conditioning layers itself."""
    import types

    import torch

    import fp8stream.methods.forward.forward_pass as forward_run
    from fp8stream.methods.forward import conditioning
    class NeedsValues(torch.nn.Module):
        def forward(self, x, return_dict=False):
            raise AssertionError("needs values")

    family = types.SimpleNamespace(inputs=lambda cfg, plan: {"x": plan.timesteps()}, model_class=lambda: NeedsValues)
    assert conditioning.from_shapes(forward_run.Prepared(family)) is None

    calls = []
    real_run = forward_run.run

    def recorded(*args, **kwargs):
        calls.append("pass")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(conditioning, "from_shapes", lambda *args: None)
    monkeypatch.setattr(forward_run, "run", recorded)
    p = run_cli("calibrate", str(flux), str(tmp_path / "out.safetensors"), "--method", "forward",
                "--forward-batch", "3", "--forward-tokens", "16", "--forward-text-tokens", "8",
                "--forward-threads", "1", "--json", "--no-progress")
    assert p.exit_code == 0, p.stderr[-2000:]
    kept = [r for r in json.loads(p.stdout)["layers"] if not r["fp8_activations"]]
    assert calls == ["pass"] and kept and all("conditioning path" in json.dumps(r) for r in kept)
