"""Sharded checkpoints (`*.safetensors.index.json`): every shard streamed, a new index, all or nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors import safe_open

from architectures import build_model
from conftest import run_cli
from fp8stream.formats.shards import shard_index
from fp8stream.io.storage import locate
from fp8stream.synthetic.checkpoint import write_checkpoint

LAYER_SUFFIXES = (".weight", ".weight_scale", ".comfy_quant", ".input_scale", ".scale_weight", ".scale_input", ".bias")


def shard_of(name: str) -> str:
    """blocks.1.self_attn.q alone in shard 1, so its q/k/v group spans two shards."""
    if name.startswith(("blocks.0.", "text_", "time_")) or name == "scaled_fp8":
        return "model-00001-of-00003.safetensors"
    if name.startswith("blocks.1.self_attn.q."):
        return "model-00002-of-00003.safetensors"
    return "model-00003-of-00003.safetensors"


def write_sharded(folder: Path, tensors) -> Path:
    folder.mkdir()
    shards: dict[str, list] = {}
    for t in tensors:
        shards.setdefault(shard_of(t.name), []).append(t)
    for shard, part in shards.items():
        write_checkpoint(str(folder / shard), part)
    index = folder / "model.safetensors.index.json"
    weight_map = {t.name: shard_of(t.name) for t in tensors}
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def read_folder(folder: Path) -> tuple[dict, dict]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / shard), "pt") as f:
            for k in f.keys():
                assert index["weight_map"][k] == shard, k
                tensors[k] = f.get_tensor(k)
    assert set(tensors) == set(index["weight_map"])
    return tensors, index


@pytest.mark.parametrize("given", ["folder", "index"])
def test_sharded_in_and_out_with_a_group_spanning_shards(tmp_path: Path, given: str) -> None:
    tensors = build_model("wan", "comfy", weight_only=True, input_scale=1.0)
    index = write_sharded(tmp_path / "in", tensors)
    whole = tmp_path / "whole.safetensors"
    write_checkpoint(str(whole), tensors)
    single = json.loads(run_cli("calibrate", "--json", whole, tmp_path / "single.safetensors").stdout)
    out = tmp_path / "out"
    result = run_cli("calibrate", "--json", index if given == "index" else index.parent, out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    after, new_index = read_folder(out)
    expected = {layer["name"]: layer["scale"] for layer in single["layers"]}
    assert {layer["name"]: layer["scale"] for layer in report["layers"]} == expected
    qkv = [f"blocks.1.self_attn.{x}" for x in "qkv"]
    assert len({float(after[f"{n}.input_scale"]) for n in qkv}) == 1
    for name in expected:  # the scale sits in its layer's shard
        assert new_index["weight_map"][f"{name}.input_scale"] == new_index["weight_map"][f"{name}.weight"]
    assert new_index["metadata"]["total_size"] == report["bytes_out"]
    assert sorted(os.listdir(tmp_path)) == ["in", "out", "single.safetensors", "whole.safetensors"]


def test_sharded_legacy_marker_in_another_shard_than_its_layers(tmp_path: Path) -> None:
    index = write_sharded(tmp_path / "in", build_model("wan", "legacy"))
    out = tmp_path / "out"
    result = run_cli("calibrate", "--json", index, out)
    assert result.exit_code == 0, result.output
    after, _ = read_folder(out)
    assert after["scaled_fp8"].numel() == 0
    assert all(layer["flavour"] == "legacy" for layer in json.loads(result.stdout)["layers"])
    assert float(after["blocks.2.ffn.0.scale_input"]) > 0


def test_a_bad_shard_leaves_no_output_folder(tmp_path: Path) -> None:
    index = write_sharded(tmp_path / "in", build_model("wan", "comfy"))
    last = index.parent / "model-00003-of-00003.safetensors"
    last.write_bytes(last.read_bytes()[:-100])
    result = run_cli("calibrate", index, tmp_path / "out")
    assert result.exit_code == 1 and "truncated" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_shard_index_locates_every_shard_once_and_is_none_for_a_single_file(tmp_path: Path) -> None:
    index = write_sharded(tmp_path / "in", build_model("wan", "comfy"))
    found = shard_index(locate(str(index.parent)))
    assert found is not None and found.path == str(index)
    weight_map = json.loads(index.read_text())["weight_map"]
    assert list(found.shards) == list(dict.fromkeys(weight_map.values()))  # in first-appearance order
    assert all(at.path == os.path.join(found.folder, name) for name, at in found.shards.items())
    assert shard_index(locate(str(index.parent / "model-00001-of-00003.safetensors"))) is None


def _break_missing(index: Path, doc: dict) -> None:
    (index.parent / "model-00002-of-00003.safetensors").unlink()


def _break_name(index: Path, doc: dict) -> None:
    doc["weight_map"]["time_embedding.0.weight"] = "../x.safetensors"
    index.write_text(json.dumps(doc))


def _break_map(index: Path, doc: dict) -> None:
    doc["weight_map"]["nope.weight"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(doc))


def _break_json(index: Path, doc: dict) -> None:
    index.write_text("{nope")


def _break_second_index(index: Path, doc: dict) -> None:
    (index.parent / "other.safetensors.index.json").write_text(json.dumps(doc))


BOTH = ("calibrate", "inspect")


@pytest.mark.parametrize("breaks, given, commands, code, line", [
    (_break_missing, "index", BOTH, 1, "{index}: shard model-00002-of-00003.safetensors is missing"),
    (_break_name, "folder", BOTH, 1, "{index}: shard name '../x.safetensors' is not a file name in the index's folder"),
    (_break_map, "index", ("calibrate",), 1,  # inspect shows the shards as they are, not held against the weight_map
     "model-00001-of-00003.safetensors: weight_map and shard disagree about tensor 'nope.weight'"),
    (_break_json, "folder", BOTH, 1, "{index}: not a readable JSON index (JSONDecodeError)"),
    (_break_second_index, "folder", BOTH, 2,
     "{folder}: is a folder with more than one *.safetensors.index.json; give a file or the index"),
])
def test_a_broken_index_is_one_line_and_its_exit_code(tmp_path: Path, breaks, given: str, commands: tuple, code: int,
                                                      line: str) -> None:
    """A broken sharded model is refused in one line with its exit code, before anything is written."""
    index = write_sharded(tmp_path / "in", build_model("wan", "comfy"))
    breaks(index, json.loads(index.read_text()))
    expected = ["fp8stream: error: " + line.format(index=index, folder=index.parent)]
    given_path = index if given == "index" else index.parent
    for command in commands:
        args = [command, given_path, tmp_path / "out"] if command == "calibrate" else [command, given_path]
        result = run_cli(*args)
        assert (result.exit_code, result.stderr.strip().splitlines()) == (code, expected), args
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_existing_output_folder_needs_force(tmp_path: Path) -> None:
    index = write_sharded(tmp_path / "in", build_model("wan", "comfy"))
    (tmp_path / "out").mkdir()
    result = run_cli("calibrate", index, tmp_path / "out")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert run_cli("calibrate", "--force", index, tmp_path / "out").exit_code == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]


def test_a_sharded_model_is_refused_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of shards cannot be a stream: one line, exit 2, nothing written (no folder '-')."""
    index = write_sharded(tmp_path / "in", build_model("wan", "comfy"))
    monkeypatch.chdir(tmp_path)
    result = run_cli("calibrate", index, "-")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "fp8stream: error: a sharded model is written as a folder of shards, not to stdout: name an output folder"]
    assert result.stdout == "" and sorted(os.listdir(tmp_path)) == ["in"]
