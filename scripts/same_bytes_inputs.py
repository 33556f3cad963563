"""The inputs of scripts/same_bytes.py: every kind of checkpoint the test suite builds, written
once with the builders of the tree on sys.path (tests/ and scripts/ of that tree).

Each input is a `Spec`: a file (or folder) name, what it is, the tier of the case matrix it
gets (`full`: every method, preset and target; `flavour`: the methods and targets that read the
flavour; `extra`: only the cases that name it), the family preset to try, and its builder.
Project modules are imported inside the builders, after the tree is first on sys.path."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PREFIX = "model.diffusion_model."
ARCHS = ("flux", "sd3", "wan", "t5")
FORWARD_VIDEO_VARIANTS = {  # tests/test_forward_video.py's variants that differ from forward_tiny's defaults
    "wan22_i2v_a14b": ("wan", {"image": False, "in_channels": 2 * 4 + 4}),
    "wan22_ti2v_5b": ("wan", {"image": False, "channels": 48}),
    "hunyuan_video15_split_meanflow": ("hunyuan-video-1.5", {"split_qkv": True, "meanflow": True}),
    "ltx23": ("ltx2", {"v23": True}),
    "cosmos_predict2_video2world": ("cosmos", {"learnable_pos": True}),
    "cosmos_predict2_text2image": ("cosmos", {"video2world": False}),
}
PRESETS = ("flux", "sd3", "wan", "flux2", "chroma", "qwen-image", "z-image", "lumina2", "hidream",
           "hunyuan-video-1.5", "ltx2", "cosmos")


@dataclass(frozen=True)
class Spec:
    name: str  # the file (or folder) name under CASES
    what: str
    tier: str  # full | flavour | extra
    preset: str | None  # the family's own --preset, where it has one
    build: Callable[[Path], None]


def _write(path: Path, tensors: list, metadata: dict | None = None) -> None:
    from fp8stream.synthetic.checkpoint import write_checkpoint

    write_checkpoint(str(path), tensors, metadata=metadata)


def _arch(arch: str, flavour: str, prefix: str, weight_only: bool) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import architectures

        _write(path, architectures.build_model(arch, flavour, prefix=prefix, weight_only=weight_only))
    return build


def architecture_specs() -> list[Spec]:
    """tests/architectures.py: flux/sd3/wan/t5 x comfy/legacy/plain x prefix, and weight-only files."""
    specs = []
    for arch in ARCHS:
        preset = arch if arch in PRESETS else None
        for flavour in ("comfy", "legacy", "plain"):
            for prefix in ("", PREFIX):
                tier = "full" if (flavour, prefix) == ("comfy", "") else "flavour"
                tag = "-prefixed" if prefix else ""
                specs.append(Spec(f"keys-{arch}-{flavour}{tag}.safetensors",
                                  f"architectures.build_model({arch!r}, {flavour!r}, prefix={prefix!r})",
                                  tier, preset, _arch(arch, flavour, prefix, False)))
        for flavour in ("comfy", "legacy"):
            specs.append(Spec(f"keys-{arch}-{flavour}-weight-only.safetensors",
                              f"architectures.build_model({arch!r}, {flavour!r}, weight_only=True)",
                              "flavour", preset, _arch(arch, flavour, "", True)))
    return specs


def _comfy_family(family: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import format_variants

        format_variants.comfy_model(family, path)
    return build


def _variant(family: str, options: dict) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import forward_tiny

        _, state, _ = forward_tiny.tiny(family, **options)
        forward_tiny.write(state, path, PREFIX)
    return build


def _encoder(case: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import test_forward_encoders as encoders

        encoders._write(case, encoders._model(case)[0], path)
    return build


def family_specs() -> list[Spec]:
    """The tiny diffusers/transformers models (tests/format_variants.py, test_forward_video.py's
    variants, test_forward_encoders.py's cases), each in ComfyUI's format."""
    import format_variants
    import test_forward_encoders as encoders

    specs = []
    for family in format_variants.FORWARD + format_variants.IMAGE:
        specs.append(Spec(f"tiny-{family}.safetensors", f"format_variants.comfy_model({family!r})", "full",
                          family if family in PRESETS else None, _comfy_family(family)))
    for variant, (family, options) in FORWARD_VIDEO_VARIANTS.items():
        specs.append(Spec(f"video-{variant}.safetensors", f"forward_tiny.tiny({family!r}, **{options!r})", "full",
                          family, _variant(family, options)))
    for case in encoders.CASES:
        specs.append(Spec(f"encoder-{case}.safetensors", f"test_forward_encoders._write({case!r})", "full", None,
                          _encoder(case)))
    return specs


def _flavour_of(source: str, flavour: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import format_variants

        format_variants.as_flavour(path.parent / source, flavour, path)
    return build


def flavour_specs(families: list[Spec]) -> list[Spec]:
    """A legacy scaled_fp8 and a plain FP8 copy of each family's file (tests/format_variants.py)."""
    specs = []
    for spec in families:
        if spec.name.startswith("video-") or spec.name == "encoder-t5xxl.safetensors":  # t5xxl is legacy already
            continue
        for flavour in ("legacy", "plain"):
            specs.append(Spec(spec.name.replace(".safetensors", f"-{flavour}.safetensors"),
                              f"format_variants.as_flavour({spec.name}, {flavour!r})", "flavour", spec.preset,
                              _flavour_of(spec.name, flavour)))
    return specs


def _small(**kwargs) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        from conftest import small_model_tensors

        _write(path, small_model_tensors(**kwargs), metadata={"modelspec.title": "tiny"})
    return build


def _example(path: Path) -> None:
    from fp8stream.synthetic.example import write_example

    write_example(str(path))


def _sharded(path: Path) -> None:
    from shard_files import sharded_model

    sharded_model(path)


def _zst(path: Path) -> None:
    """The file named without .zst, zstd level 3."""
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor(level=3).compress((path.parent / path.stem).read_bytes()))


def _sharded_flux(path: Path) -> None:
    from shard_files import shard_file

    shard_file(path.parent / "tiny-flux.safetensors", path, stem="diffusion_pytorch_model")


def _unknown(path: Path) -> None:
    _comfy_family("unknown")(path)


def _unknown_real_scales(path: Path) -> None:
    """test_unknown_family: one real scale (kept) and one placeholder (no guess)."""
    from fp8stream.synthetic.checkpoint import comfy_fp8_linear

    tensors = comfy_fp8_linear("enc.real", (16, 16), seed=0, input_scale=0.0123)
    _write(path, tensors + comfy_fp8_linear("enc.placeholder", (16, 16), seed=1, input_scale=1.0))


def _no_fp8(path: Path) -> None:
    import torch

    from fp8stream.synthetic.checkpoint import bf16_tensor

    _write(path, [bf16_tensor("w", torch.ones(4))])


def other_specs() -> list[Spec]:
    return [
        Spec("small.safetensors", "conftest.small_model_tensors()", "full", None, _small()),
        Spec("small-scaled.safetensors", "conftest.small_model_tensors(input_scale=0.02)", "flavour", None,
             _small(input_scale=0.02)),
        Spec("small-weight-only.safetensors", "conftest.small_model_tensors(weight_only=True)", "flavour", None,
             _small(weight_only=True)),
        Spec("example.safetensors", "fp8stream.synthetic.example.write_example", "full", "flux", _example),
        Spec("example.safetensors.zst", "example.safetensors, zstd level 3", "extra", None, _zst),
        Spec("tiny-flux.safetensors.zst", "tiny-flux.safetensors, zstd level 3", "extra", None, _zst),
        Spec("sharded", "shard_files.sharded_model: 2 shards + index", "flavour", None, _sharded),
        Spec("sharded-flux", "shard_files.shard_file(tiny-flux.safetensors)", "extra", None, _sharded_flux),
        Spec("unknown.safetensors", "format_variants.comfy_model('unknown')", "flavour", None, _unknown),
        Spec("unknown-real-scales.safetensors", "test_unknown_family: a real and a placeholder scale", "flavour",
             None, _unknown_real_scales),
        Spec("no-fp8.safetensors", "one BF16 tensor (nothing to calibrate)", "extra", None, _no_fp8),
    ]


def _tiny_flux(path: Path) -> None:
    import quality_models as qm

    qm.write_tiny_flux_fp8(qm.load_tiny_flux(), path)


def _stats(path: Path) -> None:
    """fp8stream.record on the tiny Flux of tests/data, as test_calibration_methods does."""
    import torch

    import fp8stream
    import quality_models as qm

    tf = qm.load_tiny_flux()
    torch.manual_seed(0)
    with fp8stream.record(tf.model, str(path)):
        qm.sample(tf, 2, 3)


def _plain_scales(path: Path) -> None:
    """Plain per-layer scales for every other FP8 layer of the tiny Flux: the rest needs --fallback."""
    from safetensors import safe_open

    with safe_open(str(path.parent / "tiny-flux-harness.safetensors"), "pt") as f:
        layers = sorted(k[:-len(".comfy_quant")] for k in f.keys() if k.endswith(".comfy_quant"))
    path.write_text(json.dumps({name: 0.001 * (i + 1) for i, name in enumerate(layers[::2])}, indent=1))


def stats_specs() -> list[Spec]:
    return [
        Spec("tiny-flux-harness.safetensors", "quality_models.write_tiny_flux_fp8 (tests/data/tiny_flux)", "full",
             "flux", _tiny_flux),
        Spec("stats.json", "fp8stream.record on the tiny Flux, qm.sample(tf, 2, 3)", "extra", None, _stats),
        Spec("plain-scales.json", "flat {layer: scale} for every other layer of tiny-flux-harness", "extra", None,
             _plain_scales),
    ]


def all_specs() -> list[Spec]:
    """In build order (a copy follows its source)."""
    families = family_specs()
    return architecture_specs() + families + flavour_specs(families) + other_specs() + stats_specs()


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (name and digest of each, sorted)."""
    if path.is_dir():
        parts = [f"{p.relative_to(path)} {digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
