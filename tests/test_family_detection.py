"""The one family detector, header only: every family of the list, its variants decided by the
shapes (where diffusers' own test mislabels them), prefixes stripped first, unknown is None."""

from __future__ import annotations

import pytest

from fp8stream import families
from fp8stream.families.detect import detect


def blocks(prefix: str, n: int, leaf: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{i}.{leaf}": shape for i in range(n)}


def flux_like(width: int, channels: int, double: int, single: int, **extra) -> dict:
    h = {"img_in.weight": (width, channels), "double_blocks.0.img_attn.norm.key_norm.scale": (128,)}
    h |= blocks("double_blocks.", double, "img_attn.qkv.weight", (3 * width, width))
    h |= blocks("single_blocks.", single, "linear1.weight", (7 * width, width))
    return h | extra


HEADERS = {
    "flux-dev": flux_like(3072, 64, 19, 38, **{"guidance_in.in_layer.weight": (3072, 256)}),
    "flux-schnell": flux_like(3072, 64, 19, 38),
    "flux-fill": flux_like(3072, 384, 19, 38, **{"guidance_in.in_layer.weight": (3072, 256)}),
    # diffusers calls every Flux.2 "flux-2-dev"; klein is 3072 (4B) or 4096 (9B) wide
    "flux2-dev": flux_like(6144, 128, 8, 48, **{"single_stream_modulation.lin.weight": (18432, 6144),
                                                "double_stream_modulation_img.lin.weight": (36864, 6144)}),
    "flux2-klein-4b": flux_like(3072, 128, 5, 20, **{"single_stream_modulation.lin.weight": (9216, 3072)}),
    "flux2-klein-9b": flux_like(4096, 128, 8, 24, **{"single_stream_modulation.lin.weight": (12288, 4096)}),
    "chroma": flux_like(3072, 64, 19, 38, **{"distilled_guidance_layer.in_proj.weight": (5120, 64),
                                             "distilled_guidance_layer.in_proj.bias": (5120,)}),
    "sd3.5-large": {"x_embedder.proj.weight": (2432, 16, 2, 2), "pos_embed": (1, 36864, 2432)}
    | blocks("joint_blocks.", 38, "context_block.adaLN_modulation.1.bias", (14592,)),
    # diffusers: neither joint_blocks.37 nor a 9216-wide modulation, so `v1`
    "sd3.5-large pruned to 30 blocks": {"x_embedder.proj.weight": (2432, 16, 2, 2)}
    | blocks("joint_blocks.", 30, "context_block.adaLN_modulation.1.bias", (14592,)),
    "sd3.5-medium": {"x_embedder.proj.weight": (1536, 16, 2, 2),
                     "joint_blocks.0.x_block.attn2.qkv.weight": (4608, 1536)}
    | blocks("joint_blocks.", 24, "context_block.adaLN_modulation.1.bias", (9216,)),
    "wan-t2v-1.3B": {"patch_embedding.weight": (1536, 16, 1, 2, 2), "head.modulation": (1, 2, 1536)}
    | blocks("blocks.", 30, "self_attn.q.weight", (1536, 1536)),
    "wan-t2v-14B": {"patch_embedding.weight": (5120, 16, 1, 2, 2), "head.modulation": (1, 2, 5120)}
    | blocks("blocks.", 40, "self_attn.q.weight", (5120, 5120)),
    "wan2.1-i2v-14B": {"patch_embedding.weight": (5120, 36, 1, 2, 2), "head.modulation": (1, 2, 5120),
                       "img_emb.proj.1.weight": (1280, 1280)},
    "wan2.2-i2v-14B": {"patch_embedding.weight": (5120, 36, 1, 2, 2), "head.modulation": (1, 2, 5120)},
    # diffusers: wan-i2v-14B
    "wan2.2-ti2v-5B": {"patch_embedding.weight": (3072, 48, 1, 2, 2), "head.modulation": (1, 2, 3072)}
    | blocks("blocks.", 30, "self_attn.q.weight", (3072, 3072)),
    "qwen-image": {"img_in.weight": (3072, 64), "txt_norm.weight": (3584,)}
    | blocks("transformer_blocks.", 60, "img_mod.1.weight", (18432, 3072)),
    "z-image": {"x_embedder.weight": (3840, 64), "cap_embedder.0.weight": (2560,)}
    | blocks("layers.", 30, "adaLN_modulation.0.weight", (15360, 256)),
    "lumina2": {"x_embedder.weight": (2304, 64), "cap_embedder.0.weight": (2304,)}
    | blocks("layers.", 26, "adaLN_modulation.1.weight", (9216, 1024)),
    "hidream": {"x_embedder.proj.weight": (2560, 64)}
    | blocks("double_stream_blocks.", 16, "block.adaLN_modulation.1.bias", (15360,)),
    "hunyuan-video": {"img_in.proj.weight": (3072, 16, 1, 2, 2),
                      "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias": (6144,)}
    | blocks("double_blocks.", 20, "img_attn.qkv.weight", (9216, 3072)),
    "hunyuan-video-1.5": {"img_in.proj.weight": (2048, 65, 1, 1, 1), "cond_type_embedding.weight": (3, 2048),
                          "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias": (4096,)}
    | blocks("double_blocks.", 54, "img_attn.qkv.weight", (6144, 2048)),
    "ltx-video": {"patchify_proj.weight": (2048, 128)}
    | blocks("transformer_blocks.", 28, "scale_shift_table", (6, 2048)),
    "ltx-2": {"patchify_proj.weight": (4096, 128),
              "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight": (4096, 256)}
    | blocks("transformer_blocks.", 48, "scale_shift_table", (6, 4096)),
    "ltx-2.3": {"patchify_proj.weight": (4096, 128),
                "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight": (4096, 256)}
    | blocks("transformer_blocks.", 48, "attn1.to_gate_logits.weight", (32, 4096)),
    "cosmos-predict2-2B": {"net.x_embedder.proj.1.weight": (2048, 68),
                           "net.blocks.0.self_attn.q_proj.weight": (2048, 2048)},
    "cosmos-1.0-7B": {"net.x_embedder.proj.1.weight": (4096, 68),
                      "net.blocks.block0.blocks.0.block.attn.to_q.0.weight": (4096, 4096)},
    "auraflow": {"init_x_linear.weight": (3072, 16), "cond_seq_linear.weight": (3072, 2048)}
    | blocks("double_layers.", 4, "attn.w2q.weight", (3072, 3072))
    | blocks("single_layers.", 32, "attn.w1q.weight", (3072, 3072)),
}


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
@pytest.mark.parametrize("variant", sorted(HEADERS))
def test_every_family_and_variant_from_the_header(variant: str, prefix: str) -> None:
    header = HEADERS[variant]
    if prefix and not variant.startswith("cosmos"):
        header = {prefix + k: v for k, v in header.items()}
    found = detect(header)
    assert found is not None and found.variant == variant, found
    assert found.key in {k.split(".", 1)[1] if k.startswith("net.") else k for k in HEADERS[variant]}
    assert found.prefix == (prefix if not variant.startswith("cosmos") else "net.")


def test_sizes_are_reported_from_the_shapes() -> None:
    found = detect(HEADERS["flux2-klein-4b"])
    assert (found.family, found.width, found.blocks) == ("flux2", 3072, (5, 20))
    assert found.describe() == "flux2-klein-4b (width 3072, 5+20 blocks; key single_stream_modulation.lin.weight)"
    assert found.to_json()["origin"] == "diffusers: flux2"


def test_an_unknown_file_is_none_not_a_guess() -> None:
    # diffusers answers `v1` for anything it does not know; a key must be present here
    assert detect({"input_blocks.0.0.weight": (320, 4, 3, 3), "my_layer.weight": (8, 8)}) is None
    assert detect({}) is None


@pytest.mark.parametrize("family, key", [("mochi", "blocks.0.attn.qkv_x.weight"),
                                         ("sana", "blocks.0.cross_attn.q_linear.weight")])
def test_families_detected_only_are_named(family: str, key: str) -> None:
    """Families without model code are still recognised from diffusers' checkpoint key (inspect
    names them; calibrate keeps their layers weight-only rather than guess)."""
    header = {"model.diffusion_model." + key: (64, 64), "model.diffusion_model.other.weight": (8, 8)}
    assert detect(header).family == family


def test_layer_names_alone_detect_the_family() -> None:
    # presets and stats matching may know only the FP8 layers' names
    assert detect(["model.diffusion_model.single_stream_modulation.lin"]).family == "flux2"
    assert detect(["double_blocks.0.img_attn.qkv", "single_blocks.0.linear1"]).family == "flux"


def test_the_registry_lists_every_family_module_once() -> None:
    """A family module left out of FAMILIES is never detected; two of one name would shadow."""
    import importlib
    import pkgutil

    import fp8stream.families as families

    # the package's own parts, not families
    shared = {"family", "detect", "spec", "next_dit", "graph_types", "samples", "tokens", "dit_parts", "text_models",
              "renames"}
    modules = [m.name for m in pkgutil.iter_modules(families.__path__) if m.name not in shared]
    declared = [importlib.import_module(f"fp8stream.families.{m}").FAMILY for m in modules]
    assert sorted(f.name for f in declared) == sorted(f.name for f in families.FAMILIES)
    assert all(f in families.FAMILIES for f in declared)
    assert len({f.name for f in families.FAMILIES}) == len(families.FAMILIES)
    assert families.by_name("wan").rule.origin == "diffusers: wan"


def test_a_family_added_with_a_preset_becomes_a_preset_choice(monkeypatch) -> None:
    """Presets live in the family's module: a new one is offered after today's, in their order."""
    import fp8stream.families as families
    from fp8stream.families.family import DetectionRule, Family

    today = ("flux", "sd3", "wan", "flux2", "chroma", "qwen-image", "z-image", "lumina2", "hidream",
             "hunyuan-video-1.5", "ltx2", "cosmos", "auraflow")
    assert families.preset_names() == today
    added = Family("newdit", "dit", DetectionRule(("new_in.weight",), "ours"), presets=(("new_in", "embedder"),))
    monkeypatch.setattr(families, "FAMILIES", (*families.FAMILIES, added))
    assert families.preset_names() == (*today, "newdit")


def test_inspect_and_calibrate_report_the_family(tmp_path) -> None:
    import json

    import torch

    from conftest import run_cli
    from fp8stream.synthetic.checkpoint import bf16_tensor, comfy_fp8_linear, write_checkpoint

    p = "model.diffusion_model."
    src = tmp_path / "klein.safetensors"
    write_checkpoint(str(src), comfy_fp8_linear(p + "single_stream_modulation.lin", (96, 32))
                     + [bf16_tensor(p + "img_in.weight", torch.zeros(3072, 128))])
    r = run_cli("inspect", "--json", src)
    family = json.loads(r.stdout)["family"]
    assert (family["family"], family["variant"], family["width"]) == ("flux2", "flux2-klein-4b", 3072)
    inspected = run_cli("inspect", src).stdout
    assert "family: flux2-klein-4b (width 3072; key single_stream_modulation.lin.weight)" in inspected
    r = run_cli("calibrate", "--dry-run", "--json", src)
    assert json.loads(r.stdout)["family"]["variant"] == "flux2-klein-4b"


@pytest.mark.parametrize("key", families.inventory_keys())
def test_each_real_size_inventory_is_detected_as_the_family_that_declares_it(key: str) -> None:
    """scripts/bench.py --arch KEY builds this inventory: the file it writes is recognised as its family."""
    owner = next(f.name for f in families.FAMILIES if key in dict(f.inventories))
    found = detect({s.name: s.shape for s in families.inventory(key)(1)})
    assert found is not None and found.family == owner, (key, found)


def test_the_bench_keys_of_before_the_move_are_all_declared() -> None:
    keys = ("flux", "sd35", "wan", "flux2", "chroma", "qwen-image", "z-image", "lumina2", "hidream", "wan22-5b",
            "wan22-i2v-a14b", "hunyuan-video-1.5", "ltx2", "cosmos-14b", "cosmos-2b", "t5xxl", "umt5xxl")
    assert set(keys) <= set(families.inventory_keys())


def test_the_registry_with_its_model_code_imports_without_torch() -> None:
    """`--help` and `inspect` ask the registry: the family modules import torch and diffusers only
    inside the model code's functions."""
    import subprocess
    import sys

    code = ("import sys, fp8stream.families\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_forward_pass_has_model_code_for_the_families_it_had() -> None:
    assert families.model_names() == ("flux", "sd3", "wan", "flux2", "chroma", "qwen-image", "z-image", "lumina2",
                                      "hidream", "bert", "t5", "clip", "llm", "hunyuan-video-1.5", "ltx2", "cosmos",
                                      "auraflow")
    texts = {f.name for f in families.FAMILIES if f.model is not None and f.kind == "text"}
    assert texts == {"bert", "t5", "clip", "llm"}  # their default margin is the text encoders'
