"""The diffusers -> checkpoint renames that match stats recorded on a diffusers model
(`--method stats`, fp8stream/families/renames.py) are what each family's own converter does: the
block each family's module holds equals a fresh derivation, and on Flux's, SD3's and Wan's layers, at real size and at
the forward tests' tiny width, the renames equal the table that was written by hand before (kept
here as what they must stay)."""

from __future__ import annotations

import re

import pytest

import forward_tiny as ft  # puts scripts/ on sys.path
from fp8stream.families import FAMILIES, by_name, inventory
from fp8stream.families.renames import rename
from fp8stream.methods.forward.mapping import derive_mapping, linear_renames
from scripts.derive_renames import START, derived_renames, family_modules, updated

# Deeper than the three blocks the renames are derived from (a block number they never saw, a last
# block that may differ); the real depth costs seconds more and renames no other pattern.
DEPTH = 5

# The table that served before the renames were derived (calibration/diffusers_names.py at 488f875):
# diffusers module name -> ComfyUI layer, per family ({0} = block index).
_D = r"(\d+)"
HAND_WRITTEN: dict[str, list[tuple[str, str]]] = {
    "flux": [
        (rf"transformer_blocks\.{_D}\.attn\.to_[qkv]", "double_blocks.{0}.img_attn.qkv"),
        (rf"transformer_blocks\.{_D}\.attn\.add_[qkv]_proj", "double_blocks.{0}.txt_attn.qkv"),
        (rf"transformer_blocks\.{_D}\.attn\.to_out\.0", "double_blocks.{0}.img_attn.proj"),
        (rf"transformer_blocks\.{_D}\.attn\.to_add_out", "double_blocks.{0}.txt_attn.proj"),
        (rf"transformer_blocks\.{_D}\.ff\.net\.0\.proj", "double_blocks.{0}.img_mlp.0"),
        (rf"transformer_blocks\.{_D}\.ff\.net\.2", "double_blocks.{0}.img_mlp.2"),
        (rf"transformer_blocks\.{_D}\.ff_context\.net\.0\.proj", "double_blocks.{0}.txt_mlp.0"),
        (rf"transformer_blocks\.{_D}\.ff_context\.net\.2", "double_blocks.{0}.txt_mlp.2"),
        (rf"transformer_blocks\.{_D}\.norm1\.linear", "double_blocks.{0}.img_mod.lin"),
        (rf"transformer_blocks\.{_D}\.norm1_context\.linear", "double_blocks.{0}.txt_mod.lin"),
        (rf"single_transformer_blocks\.{_D}\.(?:attn\.to_[qkv]|proj_mlp)", "single_blocks.{0}.linear1"),
        (rf"single_transformer_blocks\.{_D}\.proj_out", "single_blocks.{0}.linear2"),
        (rf"single_transformer_blocks\.{_D}\.norm\.linear", "single_blocks.{0}.modulation.lin"),
        (r"x_embedder", "img_in"),
        (r"context_embedder", "txt_in"),
        (r"time_text_embed\.timestep_embedder\.linear_1", "time_in.in_layer"),
        (r"time_text_embed\.timestep_embedder\.linear_2", "time_in.out_layer"),
        (r"time_text_embed\.guidance_embedder\.linear_1", "guidance_in.in_layer"),
        (r"time_text_embed\.guidance_embedder\.linear_2", "guidance_in.out_layer"),
        (r"time_text_embed\.text_embedder\.linear_1", "vector_in.in_layer"),
        (r"time_text_embed\.text_embedder\.linear_2", "vector_in.out_layer"),
        (r"proj_out", "final_layer.linear"),
        (r"norm_out\.linear", "final_layer.adaLN_modulation.1"),
    ],
    "sd3": [
        (rf"transformer_blocks\.{_D}\.attn\.to_[qkv]", "joint_blocks.{0}.x_block.attn.qkv"),
        (rf"transformer_blocks\.{_D}\.attn\.add_[qkv]_proj", "joint_blocks.{0}.context_block.attn.qkv"),
        (rf"transformer_blocks\.{_D}\.attn\.to_out\.0", "joint_blocks.{0}.x_block.attn.proj"),
        (rf"transformer_blocks\.{_D}\.attn\.to_add_out", "joint_blocks.{0}.context_block.attn.proj"),
        (rf"transformer_blocks\.{_D}\.ff\.net\.0\.proj", "joint_blocks.{0}.x_block.mlp.fc1"),
        (rf"transformer_blocks\.{_D}\.ff\.net\.2", "joint_blocks.{0}.x_block.mlp.fc2"),
        (rf"transformer_blocks\.{_D}\.ff_context\.net\.0\.proj", "joint_blocks.{0}.context_block.mlp.fc1"),
        (rf"transformer_blocks\.{_D}\.ff_context\.net\.2", "joint_blocks.{0}.context_block.mlp.fc2"),
        (rf"transformer_blocks\.{_D}\.norm1\.linear", "joint_blocks.{0}.x_block.adaLN_modulation.1"),
        (rf"transformer_blocks\.{_D}\.norm1_context\.linear", "joint_blocks.{0}.context_block.adaLN_modulation.1"),
        (r"time_text_embed\.timestep_embedder\.linear_1", "t_embedder.mlp.0"),
        (r"time_text_embed\.timestep_embedder\.linear_2", "t_embedder.mlp.2"),
        (r"time_text_embed\.text_embedder\.linear_1", "y_embedder.mlp.0"),
        (r"time_text_embed\.text_embedder\.linear_2", "y_embedder.mlp.2"),
        (r"context_embedder", "context_embedder"),
        (r"proj_out", "final_layer.linear"),
        (r"norm_out\.linear", "final_layer.adaLN_modulation.1"),
    ],
    "wan": [
        (rf"blocks\.{_D}\.attn1\.to_q", "blocks.{0}.self_attn.q"),
        (rf"blocks\.{_D}\.attn1\.to_k", "blocks.{0}.self_attn.k"),
        (rf"blocks\.{_D}\.attn1\.to_v", "blocks.{0}.self_attn.v"),
        (rf"blocks\.{_D}\.attn1\.to_out\.0", "blocks.{0}.self_attn.o"),
        (rf"blocks\.{_D}\.attn2\.to_q", "blocks.{0}.cross_attn.q"),
        (rf"blocks\.{_D}\.attn2\.to_k", "blocks.{0}.cross_attn.k"),
        (rf"blocks\.{_D}\.attn2\.to_v", "blocks.{0}.cross_attn.v"),
        (rf"blocks\.{_D}\.attn2\.to_out\.0", "blocks.{0}.cross_attn.o"),
        (rf"blocks\.{_D}\.ffn\.net\.0\.proj", "blocks.{0}.ffn.0"),
        (rf"blocks\.{_D}\.ffn\.net\.2", "blocks.{0}.ffn.2"),
        (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
        (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
        (r"condition_embedder\.time_proj", "time_projection.1"),
        (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
        (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
        (r"proj_out", "head.head"),
    ],
}



def hand_written(name: str, family: str) -> str | None:
    for pattern, layer in HAND_WRITTEN.get(family, []):
        if m := re.fullmatch(pattern, name):
            return layer.format(*m.groups())
    return None


def converter_renames(family: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """diffusers Linear module -> checkpoint layer, by the family's converter on these shapes (no
    block templates: every block of the model spelled out)."""
    model = by_name(family).model
    cfg = model.config(shapes)
    return linear_renames(derive_mapping(shapes, "", lambda state: model.convert(state, cfg)), shapes)


def assert_same_as_hand_written(family: str, renames: dict[str, str]) -> list[str]:
    """Each module renamed as by hand, and (where renamed) to the converter's layer; the modules
    neither renames."""
    for module, layer in renames.items():
        assert rename(module, family) == hand_written(module, family), module
        assert rename(module, family) in (layer, None), module
    # the hand-written table renames nothing the converter does not: each of its entries is used
    unused = [p for p, _ in HAND_WRITTEN[family] if not any(re.fullmatch(p, module) for module in renames)]
    assert unused == []
    return sorted(module for module in renames if rename(module, family) is None)


@pytest.mark.parametrize("family, key", [("flux", "flux"), ("sd3", "sd35"), ("wan", "wan"), ("wan", "wan22-5b"),
                                         ("wan", "wan22-i2v-a14b")])
def test_the_renames_equal_the_hand_written_ones_at_real_size(family: str, key: str) -> None:
    """The real model's widths (Flux.1-dev, SD3.5 Large, Wan 2.1 14B / 2.2), DEPTH blocks deep."""
    shapes = {spec.name: spec.shape for spec in inventory(key)(DEPTH)}
    assert assert_same_as_hand_written(family, converter_renames(family, shapes)) == []


@pytest.mark.parametrize("family", ["flux", "sd3", "wan"])
def test_the_renames_equal_the_hand_written_ones_at_tiny_width(family: str) -> None:
    """The tiny models hold two layers no real-size inventory has, which neither renames: SD3.5
    Medium's second attention (`attn2`) and Wan 2.1 i2v's image branch (`k_img`, `v_img`, `img_emb`)."""
    _, state, _ = ft.tiny(family)
    unrenamed = assert_same_as_hand_written(family, converter_renames(family, {k: tuple(v.shape)
                                                                                for k, v in state.items()}))
    image_branch = (".attn2.add_", "condition_embedder.image_embedder.")
    assert all(".attn2." in m if family == "sd3" else any(p in m for p in image_branch) for m in unrenamed)


def test_each_family_module_holds_the_renames_its_converter_derives() -> None:
    """Stale after a converter or a family changed: `python scripts/derive_renames.py`. Its block
    in the module's text is the one the script writes, and the family passes it to its Family."""
    derived, modules = derived_renames(), family_modules()
    stale = [f.name for f in FAMILIES if f.diffusers_renames != derived.get(f.name, ())
             or updated(text := modules[f.name].read_text(encoding="utf-8"), f.diffusers_renames) != text]
    assert stale == [], f"stale: {stale}: run python scripts/derive_renames.py"
    assert set(derived) >= set(HAND_WRITTEN)


def test_families_without_model_code_have_no_renames() -> None:
    without = [f for f in FAMILIES if f.model is None]
    modules = family_modules()
    assert without and all(not f.diffusers_renames for f in without)
    assert not [f.name for f in without if START in modules[f.name].read_text(encoding="utf-8")]
    assert rename("transformer_blocks.0.attn.to_q", "hunyuan-video") is None
    assert rename("transformer_blocks.0.attn.to_q", "no-such-family") is None


def test_the_script_adds_a_block_above_a_family_that_has_none_and_rewrites_only_the_block() -> None:
    """A family given model code (its module has no block yet): the block goes above its FAMILY and
    the comments on it; run again, only the block changes."""
    module = 'from x import Family\n\n\n# why it is tried first\nFAMILY = Family("x", "dit")\n'
    once = updated(module, (("a.{}.to_q", "b.{}.qkv"),))
    assert once == ('from x import Family\n\n\n' + START + 'DIFFUSERS_RENAMES = (\n    ("a.{}.to_q", "b.{}.qkv"),\n)\n'
                    '# end of derived renames\n\n\n# why it is tried first\nFAMILY = Family("x", "dit")\n')
    assert updated(once, (("a.{}.to_q", "b.{}.qkv"),)) == once
    assert updated(once, (("c", "d"),)) == once.replace('("a.{}.to_q", "b.{}.qkv")', '("c", "d")')
    assert updated(module, ()) == module


def test_a_block_template_gives_the_block_number_of_the_name() -> None:
    assert rename("transformer_blocks.17.attn.add_k_proj", "flux") == "double_blocks.17.txt_attn.qkv"
    assert rename("single_transformer_blocks.37.proj_mlp", "flux") == "single_blocks.37.linear1"
    assert rename("transformer_blocks.x.attn.to_q", "flux") is None
    assert rename("norm_out.linear", "sd3") == "final_layer.adaLN_modulation.1"


@pytest.mark.parametrize("family, key", [(f.name, key) for f in FAMILIES if f.name not in HAND_WRITTEN
                                         for key, _ in f.inventories if f.diffusers_renames])
def test_every_family_renames_every_block_as_its_converter_does(family: str, key: str) -> None:
    """The families the hand-written table lacked: the renames stored hold for every layer of the
    real model's widths, DEPTH blocks deep."""
    shapes = {spec.name: spec.shape for spec in inventory(key)(DEPTH)}
    renames = converter_renames(family, shapes)
    assert renames and {module: rename(module, family) for module in renames} == renames
