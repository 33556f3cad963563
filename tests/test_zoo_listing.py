"""The zoo's listing and its one-line usage errors (no Ray, no store needed)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fp8stream.cli import main
from fp8stream.synthetic.checkpoint import write_checkpoint
from fp8stream.zoo.listing import ZooItem, pairs_from_prefixes, probe, read_pairs
from tests.conftest import small_model_tensors


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
    assert _zoo("--pairs", twice) == (2, "fp8stream: error: o.safetensors: named as the output of more than one input\n")
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
