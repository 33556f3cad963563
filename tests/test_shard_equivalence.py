"""A sharded copy of a model gets the same bytes as the model in one file (issue 10 item 1).

Every model the suite builds is cut into 2 and 3 shards at arbitrary tensors (seeded): with
safetensors' order (F32 scales first, FP8 weights, U8 markers last) a layer's weight, scales
and marker land in different shards, and shared-scale groups span shards. The scales, and every
other output tensor, must be byte-identical to the single file's output.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from architectures import build_model
from conftest import small_model_tensors
from fp8stream.io.header import OutputEntry
from fp8stream.io.reader import LazyFile
from fp8stream.io.source import TensorSource
from fp8stream.io.writer import StreamingWriter
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.rewrite import RewriteOptions, calibrate_file
from fp8stream.synthetic.checkpoint import SyntheticTensor, write_checkpoint


def _wan_small_time_projection() -> list[SyntheticTensor]:
    """The issue's case: time_projection.1's weight scale x1e-3 (its q/k/v consumers' bound moves)."""
    out = []
    for t in build_model("wan", "comfy", weight_only=True, input_scale=1.0):
        if t.name == "time_projection.1.weight_scale":
            t = SyntheticTensor(t.name, t.dtype, t.shape,
                                np.float32(np.frombuffer(t.data, np.float32)[0] * 1e-3).tobytes())
        out.append(t)
    return out


def _synthetic(build) -> Callable[[Path], None]:
    return lambda path: write_checkpoint(str(path), build())


def _forward_dit(family: str) -> Callable[[Path], None]:
    """A tiny diffusers model of the family, every linear FP8: the default runs its forward pass."""
    import forward_tiny as ft
    return lambda path: ft.write(ft.tiny(family)[1], path, "")


def _forward_text_encoder(case: str) -> Callable[[Path], None]:
    """A tiny transformers text encoder as ComfyUI's files hold it (test_forward_encoders' cases)."""
    def write(path: Path) -> None:
        import test_forward_encoders as fe
        model, _ = fe._model(case)
        fe._write(case, model, path)
    return write


# The synthetic models carry only what the bound needs, so the default falls back to simulate on
# them; the *-forward models are whole, so the default runs the forward pass (checked below).
MODELS: dict[str, Callable[[Path], None]] = {
    **{f"{arch}-{flavour}": _synthetic(lambda a=arch, f=flavour: build_model(a, f))
       for arch in ("flux", "sd3", "wan", "t5") for flavour in ("comfy", "legacy", "plain")},
    "flux-prefixed": _synthetic(lambda: build_model("flux", "comfy", prefix="model.diffusion_model.")),
    "wan-weight-only-placeholders": _synthetic(lambda: build_model("wan", "comfy", weight_only=True, input_scale=1.0)),
    "wan-time-projection-x1e-3": _synthetic(_wan_small_time_projection),
    "small-real-scales": _synthetic(lambda: small_model_tensors(input_scale=0.0123)),
    **{f"{family}-forward": _forward_dit(family) for family in ("flux", "sd3", "wan")},
    "t5xxl-legacy-forward": _forward_text_encoder("t5xxl"),
    "umt5-comfy-forward": _forward_text_encoder("umt5"),
}
# Text encoders the default cannot run (the synthetic files lack what the model needs; a legacy
# file is then kept weight-only whole, through its marker) and no
# producer graph knows: every layer kept weight-only, so no scale to place (the *-forward text
# encoders below cover scales in shards).
KEPT_WEIGHT_ONLY = {"t5-comfy", "t5-plain", "t5-legacy"}
# Small forward settings: the same for the single file and its shards.
SETTINGS = CalibrationSettings(forward_batch=2, forward_tokens=16, forward_text_tokens=8, forward_threads=1)


def write_shards(single: Path, folder: Path, shards: int, seed: int) -> None:
    """`single`'s tensors, in its data order, cut into `shards` files at random tensors."""
    folder.mkdir()
    with LazyFile(str(single)) as f:
        header = f.header
    names = [t.name for t in header.tensors]
    cuts = sorted(random.Random(seed).sample(range(1, len(names)), shards - 1))
    bounds = list(zip([0] + cuts, cuts + [len(names)], strict=True))
    weight_map = {}
    with TensorSource.for_file(str(single), header) as source:
        for i, (a, b) in enumerate(bounds):
            shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            infos = header.tensors[a:b]
            entries = [OutputEntry(t.name, t.dtype, t.shape, t.nbytes) for t in infos]
            with open(folder / shard, "wb") as out:
                writer = StreamingWriter(out, entries, header.metadata)
                writer.write_header()
                for t in infos:
                    if t.nbytes:
                        writer.write(t.name, source.get(t.name))
                    weight_map[t.name] = shard
                writer.finish()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def read_tensors(paths: list[Path]) -> dict[str, bytes]:
    out = {}
    for path in paths:
        with LazyFile(str(path)) as f:
            for t in f.header.tensors:
                out[t.name] = f.read(t)
    return out


def fp8_layers(index: dict) -> list[str]:
    """The FP8 layers of a sharded output, from its index: each `.weight` with a weight scale."""
    names = index["weight_map"]
    return [n[:-7] for n in names if n.endswith(".weight")
            and (n[:-7] + ".weight_scale" in names or n[:-7] + ".scale_weight" in names)]


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_sharded_copy_gets_the_single_files_bytes(tmp_path: Path, model: str, shards: int) -> None:
    single = tmp_path / "single.safetensors"
    MODELS[model](single)
    first = calibrate_file(RewriteOptions(str(single), str(tmp_path / "single-out.safetensors"), settings=SETTINGS))
    if model.endswith("-forward"):  # the default's own method ran: a measured amax x margin on every layer
        assert first.layers and all(layer.margin is not None for layer in first.layers), first.notes
    expected = read_tensors([tmp_path / "single-out.safetensors"])
    for seed in range(2):
        folder = tmp_path / f"in-{seed}"
        write_shards(single, folder, shards, seed=zlib.crc32(f"{model}/{shards}/{seed}".encode()))
        report = calibrate_file(RewriteOptions(str(folder), str(tmp_path / f"out-{seed}"), settings=SETTINGS))
        out = sorted((tmp_path / f"out-{seed}").glob("*.safetensors"))
        assert len(out) == shards
        got = read_tensors(out)
        assert got.keys() == expected.keys()
        differ = [name for name in expected if got[name] != expected[name]]
        assert not differ, f"{model}, {shards} shards, seed {seed}: {differ[:5]}"
        assert [layer.name for layer in report.layers] == [layer.name for layer in first.layers]
        index = json.loads((tmp_path / f"out-{seed}" / "model.safetensors.index.json").read_text())
        scaled = [layer.name for layer in report.layers]
        assert scaled or model in KEPT_WEIGHT_ONLY, model
        assert set(scaled) <= set(fp8_layers(index))
        for layer in scaled:  # the scale we write sits in the shard of its layer's weight
            key = next(k for k in (layer + ".input_scale", layer + ".scale_input") if k in index["weight_map"])
            assert index["weight_map"][key] == index["weight_map"][layer + ".weight"]
