"""What a run of the forward pass does before its first copied byte: the header-only work
(prepare, the meta pass) builds the model on the meta device only, and what it derives through
diffusers is cached between runs (methods/forward/derived_cache.py): a hit writes the bytes of a
miss; a corrupt entry, another version, the off switch or an unwritable folder mean the work is
done again, silently."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import forward_tiny as ft
from conftest import run_cli
from fp8stream.io.header import read_header
from fp8stream.methods.forward import conditioning, derived_cache, forward_pass


def _header(family: str, folder: Path):
    with open(ft.comfy_file(family, folder), "rb") as f:
        return read_header(f)


def test_header_only_work_computes_no_buffer(tmp_path, monkeypatch):
    """prepare and the meta pass need names and shapes only: the models they build hold no real
    tensor (SD3's position table, 0.9 s to compute at full size on 2 cores, is not computed)."""
    monkeypatch.setenv(derived_cache.OFF, "1")
    devices = []
    build = forward_pass.meta_model

    def recorded(*args, **kwargs):
        model = build(*args, **kwargs)
        devices.append({t.device.type for t in [*model.parameters(), *model.buffers()]})
        return model

    monkeypatch.setattr(forward_pass, "meta_model", recorded)
    monkeypatch.setattr(conditioning, "meta_model", recorded)
    prepared = forward_pass.prepare(_header("sd3", tmp_path))
    assert prepared.reason is None
    assert conditioning.from_shapes(prepared) is not None
    assert devices == [{"meta"}, {"meta"}]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The derived cache on, in a folder of this test's own; counts the work a hit saves."""
    monkeypatch.delenv(derived_cache.OFF, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    counts = {"mapping": 0, "meta pass": 0}

    def counted(name, work):
        def run(*args, **kwargs):
            counts[name] += 1
            return work(*args, **kwargs)
        return run

    monkeypatch.setattr(forward_pass, "derive_mapping", counted("mapping", forward_pass.derive_mapping))
    monkeypatch.setattr(conditioning, "_traced", counted("meta pass", conditioning._traced))
    return counts


def _entries() -> list[Path]:
    return sorted(derived_cache.folder().glob("*.json"))


def _derived(header) -> tuple:
    """What prepare and the meta pass derive, as plain data."""
    prepared = forward_pass.prepare(header)
    path = conditioning.from_shapes(prepared)
    return (prepared.reason, repr(prepared.config), prepared.mapping, prepared.reached, prepared.scale_names,
            path and (path.order, path.per_step, path.ran))


def test_a_cache_hit_writes_the_bytes_of_a_miss(tmp_path, cache, monkeypatch):
    source = ft.comfy_file("flux", tmp_path)
    outputs = []
    for run in ("off", "miss", "hit"):
        if run == "off":
            monkeypatch.setenv(derived_cache.OFF, "1")
        else:
            monkeypatch.delenv(derived_cache.OFF, raising=False)
        out = tmp_path / f"{run}.safetensors"
        result = run_cli("calibrate", source, out)
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
        assert len(_entries()) == (0 if run == "off" else 2)
    assert cache == {"mapping": 2, "meta pass": 2}  # the hit did neither
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("damage", ["truncated", "edited", "not json", "wrong shape"])
def test_a_corrupt_entry_is_ignored_and_replaced(tmp_path, cache, capsys, damage):
    header = _header("sd3", tmp_path)
    want = _derived(header)
    for entry in _entries():
        text = entry.read_text()
        entry.write_bytes({"truncated": text[: len(text) // 2].encode(),
                           "edited": text.replace("joint_blocks.0", "joint_blocks.9").encode(),
                           "not json": b"\xff\xfe garbage",
                           "wrong shape": _sealed(entry.name, {"config": "[1, 2]", "path": 3})}[damage])
    assert _derived(header) == want
    assert cache == {"mapping": 2, "meta pass": 2}
    assert capsys.readouterr() == ("", "")
    assert _derived(header) == want and cache == {"mapping": 2, "meta pass": 2}  # rewritten: a hit again


def _sealed(name: str, payload: dict) -> bytes:
    """An entry whose checksum holds but whose content is not what its kind holds."""
    key, kind, _ = name.split(".")
    text = json.dumps(payload)
    return json.dumps({"key": key, "kind": kind, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                       "payload": text}).encode()


def test_another_diffusers_version_misses(tmp_path, cache, monkeypatch):
    header = _header("wan", tmp_path)
    want = _derived(header)
    _derived(header)
    assert cache == {"mapping": 1, "meta pass": 1}
    versions = derived_cache.versions()
    assert derived_cache.installed("diffusers") in versions
    monkeypatch.setattr(derived_cache, "versions",
                        lambda: tuple("0.0.1" if v == derived_cache.installed("diffusers") else v
                                      for v in versions))
    assert _derived(header) == want
    assert cache == {"mapping": 2, "meta pass": 2} and len(_entries()) == 4


def test_the_off_switch_reads_and_writes_nothing(tmp_path, cache, monkeypatch):
    header = _header("flux", tmp_path)
    _derived(header)
    monkeypatch.setenv(derived_cache.OFF, "1")
    for entry in _entries():  # an entry that would be read breaks the run if it were
        entry.write_text(_sealed(entry.name, {"config": "{}", "reached": [], "mapping": {},
                                              "path": None}).decode())
    want = _derived(header)
    assert cache == {"mapping": 2, "meta pass": 2}
    monkeypatch.delenv(derived_cache.OFF)
    assert _derived(header) != want  # the planted entries were there to be read


def test_an_unwritable_cache_folder_is_ignored(tmp_path, cache, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    header = _header("flux", tmp_path)
    want = _derived(header)
    assert _derived(header) == want
    assert cache == {"mapping": 2, "meta pass": 2}
    assert capsys.readouterr() == ("", "")


def test_nothing_to_keep_writes_no_entry(cache):
    """A config that is not plain data has no payload: an entry of null would only be read back
    as a miss and written again on every run."""
    derived_cache.store("k" * 16, "prepared", None)
    assert _entries() == []


def _child(code: str) -> list:
    env = {**os.environ, derived_cache.OFF: "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_a_calibrate_run_imports_neither_transformers_nor_scipy(tmp_path):
    """diffusers pulls in transformers, scipy and peft where they are installed, which no DiT's
    pass uses (half of diffusers' import time): a `calibrate` run of a DiT imports none of them,
    and transformers still imports afterwards (a text encoder's)."""
    pytest.importorskip("transformers")
    src, out = ft.comfy_file("flux", tmp_path), tmp_path / "out.safetensors"
    args = ["calibrate", str(src), str(out), "--forward-batch", "2", "--forward-tokens", "8",
            "--forward-text-tokens", "4", "--no-progress", "--json"]
    code = ("import json, sys\n"
            "from fp8stream.cli import main\n"
            "try:\n"
            f"    main({args!r})\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "before = sorted(n for n in ('transformers', 'scipy', 'peft') if n in sys.modules)\n"
            "import transformers\n"
            "print(json.dumps([code, before, transformers.__name__]))\n")
    assert _child(code) == [0, [], "transformers"]
    with open(out, "rb") as f:
        assert any(t.name.endswith(".input_scale") for t in read_header(f).tensors)


PREPARE = ("import sys, json\n"
           "from fp8stream.io.header import read_header\n"
           "from fp8stream.methods.forward import forward_pass\n"
           "from fp8stream.methods.forward.diffusers_import import lean_for_this_process\n"
           "{lean}"
           "with open({path!r}, 'rb') as f:\n"
           "    prepared = forward_pass.prepare(read_header(f))\n"
           "model = forward_pass.meta_model(prepared.family, prepared.config)\n"
           "from diffusers.utils import is_scipy_available, is_transformers_available\n"
           "print(json.dumps([prepared.reason, type(model).__name__, is_transformers_available(),\n"
           "                  is_scipy_available()]))\n")


def test_diffusers_stays_whole_where_the_process_is_not_ours(tmp_path):
    """What diffusers decides at its import holds for the process: a library user's (no
    lean_for_this_process), or one that imported diffusers first, gets diffusers whole; where a
    package diffusers imports needs what is hidden (peft imports transformers), diffusers is
    imported again, as installed."""
    pytest.importorskip("transformers")
    path = str(ft.comfy_file("flux", tmp_path))
    whole = [None, "FluxTransformer2DModel", True, True]
    assert _child(PREPARE.format(lean="", path=path)) == whole
    assert _child(PREPARE.format(lean="lean_for_this_process()\n", path=path)) == \
        [None, "FluxTransformer2DModel", False, False]
    assert _child("import diffusers\n" + PREPARE.format(lean="lean_for_this_process()\n", path=path)) == whole
    needy = ("from fp8stream.methods.forward import diffusers_import as di\n"
             "real = di._import_diffusers_models\n"
             "def needs_transformers():\n"
             "    import diffusers.models.transformers.transformer_flux  # noqa: F401\n"
             "    import transformers  # noqa: F401\n"
             "    real()\n"
             "di._import_diffusers_models = needs_transformers\n")
    assert _child(needy + PREPARE.format(lean="lean_for_this_process()\n", path=path)) == whole
