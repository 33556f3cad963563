"""The zoo's listing and its one-line usage errors (no Ray, no store needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fp8stream.cli import main
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.zoo.listing import ZooItem, pairs_from_prefixes, probe, read_pairs
from tests.conftest import small_model_tensors
from tests.shard_files import sharded_model


def _zoo(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["zoo", *map(str, args)])
    return result.exit_code, result.stderr


def test_pairs_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "pairs.txt"
    good.write_text("# listing\n\ns3://a/x.safetensors s3://b/x.safetensors\n")
    assert read_pairs(str(good)) == [("s3://a/x.safetensors", "s3://b/x.safetensors")]
    bad = tmp_path / "bad.txt"
    bad.write_text("only-one-field\n")
    assert _zoo("--pairs", bad) == (2, f"fp8stream: error: {bad}:1: expected 'IN OUT', got 1 fields\n")
    twice = tmp_path / "twice.txt"
    twice.write_text("a.safetensors o.safetensors\nb.safetensors o.safetensors\n")
    assert _zoo("--pairs", twice) == (
        2, "fp8stream: error: o.safetensors: named as the output of more than one input\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert _zoo("--pairs", empty) == (2, "fp8stream: error: the listing is empty: nothing to calibrate\n")
    assert _zoo()[0] == 2


def test_prefix_listing_and_probe(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_checkpoint(str(src / "sub" / "a.safetensors"), small_model_tensors())
    (src / "notes.txt").write_text("not a checkpoint")
    pairs = pairs_from_prefixes(f"file://{src}", f"file://{tmp_path}/dst")
    assert pairs == [(f"file://{src}/sub/a.safetensors", f"file://{tmp_path}/dst/sub/a.safetensors")]
    item = ZooItem(*pairs[0])
    probe(item, None)
    assert item.error is None and item.identity is not None and item.identity.size > 0
    assert item.memory >= 300 << 20
    broken = ZooItem(f"file://{src}/notes.txt", "x")
    probe(broken, None)
    assert broken.error and broken.identity is None


def test_sharded_models_are_one_item_and_skip_if_done_works_without_s3(tmp_path: Path) -> None:
    """file:// and memory:// have no user metadata: the record is a sidecar object beside the
    output (the index of a sharded one), written before the output is committed."""
    import fsspec

    from fp8stream.commands.zoo import zoo_settings
    from fp8stream.rewrite import RewriteOptions
    from fp8stream.zoo.identity import is_done, output_metadata
    from fp8stream.zoo.task import run_one

    src = tmp_path / "src"
    src.mkdir()
    write_checkpoint(str(src / "a.safetensors"), small_model_tensors())
    sharded_model(src / "big")
    mem = fsspec.filesystem("memory")
    mem.pipe("/zoo/src/c.safetensors", (src / "a.safetensors").read_bytes())
    pairs = pairs_from_prefixes(f"file://{src}", f"file://{tmp_path}/dst") + [
        ("memory://zoo/src/c.safetensors", "memory://zoo/dst/c.safetensors")]
    assert [p[0].rsplit("/", 1)[1] for p in pairs] == ["a.safetensors", "big", "c.safetensors"]
    settings, digest = zoo_settings("simulate", "bound", 4.0, 64, 0, "cpu", None)
    items = [ZooItem(*p) for p in pairs]
    for item in items:
        probe(item, None)
        assert item.error is None and not is_done(item.record_url, item.identity, digest)
        meta = output_metadata(item.identity, digest)
        report = run_one(RewriteOptions(input=item.input, output=item.output, settings=settings), item.pins,
                         item.record_url, meta, {})
        assert report.status == "ok", report.error
        assert is_done(item.record_url, item.identity, digest)
    assert items[1].record_url == f"file://{tmp_path}/dst/big/model.safetensors.index.json"
    assert sorted(p.name for p in (tmp_path / "dst" / "big").iterdir()) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "model.safetensors.index.json.fp8stream.json"]
    assert mem.exists("/zoo/dst/c.safetensors.fp8stream.json")
    sharded_model(tmp_path / "changed", seed=5)  # a shard replaced: the item is no longer done
    shard = "model-00002-of-00002.safetensors"
    (src / "big" / shard).write_bytes((tmp_path / "changed" / shard).read_bytes())
    again = ZooItem(*pairs[1])
    probe(again, None)
    assert not is_done(again.record_url, again.identity, digest)
    mem.rm("/zoo/dst/c.safetensors")  # the record alone does not make an output done
    assert not is_done(items[2].record_url, items[2].identity, digest)


def test_stores_without_their_driver_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gs:// and hf:// without their driver: the error names the extra. The driver is made
    missing here (None in sys.modules fails its import), whatever this machine has installed."""
    from fsspec.registry import _registry

    for url, driver, extra in (("gs://b/m.safetensors", "gcsfs", "gcs"),
                               ("hf://org/repo/m.safetensors", "huggingface_hub", "hf")):
        scheme = url.split(":")[0]
        monkeypatch.setitem(sys.modules, driver, None)
        monkeypatch.delitem(_registry, scheme, raising=False)
        result = CliRunner().invoke(main, ["inspect", url])
        assert result.exit_code == 2 and result.stderr == \
            f"fp8stream: error: {url}: {scheme}:// needs {driver}: pip install 'fp8stream[{extra}]'\n"


def test_a_report_file_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    """`zoo ... --report FILE` into a folder that does not exist: the one-line error of
    calibrate and check (exit 1), not a traceback; `_emit` is what writes every zoo line."""
    from fp8stream.commands.zoo import _emit
    from fp8stream.errors import EXIT_FAILURE, OutputError

    report = tmp_path / "no-such-folder" / "zoo.log"
    with pytest.raises(OutputError) as e:
        _emit('{"file": "a"}', str(report))
    assert e.value.exit_code == EXIT_FAILURE and str(e.value).startswith(f"--report {report}: ")
