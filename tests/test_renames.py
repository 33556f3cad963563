"""The diffusers -> checkpoint renames that match stats recorded on a diffusers model
(`--method stats`, fp8stream/families/renames.py) are what each family's own converter does: the
stored file equals a fresh derivation, and on Flux's, SD3's and Wan's layers, at real size and at
the forward tests' tiny width, the renames equal the table that was written by hand before."""

from __future__ import annotations

import pytest

import forward_tiny as ft  # puts scripts/ on sys.path
from fp8stream.calibration.diffusers_names import rename as hand_written
from fp8stream.families import FAMILIES, by_name, inventory
from fp8stream.families.renames import rename, stored_renames
from fp8stream.forward.mapping import derive_mapping, linear_renames
from scripts.derive_renames import derived_renames


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
    # the hand-written table renames nothing the converter does not: its every entry was used
    assert len({hand_written(module, family) for module in renames} - {None}) > 0
    return sorted(module for module in renames if rename(module, family) is None)


@pytest.mark.parametrize("family, key", [("flux", "flux"), ("sd3", "sd35"), ("wan", "wan"), ("wan", "wan22-5b"),
                                         ("wan", "wan22-i2v-a14b")])
def test_the_renames_equal_the_hand_written_ones_at_real_size(family: str, key: str) -> None:
    """Every block of the real model (Flux.1-dev 19+38, SD3.5 Large, Wan 2.1 14B / 2.2)."""
    shapes = {spec.name: spec.shape for spec in inventory(key)(None)}
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


def test_the_stored_renames_are_what_the_converters_derive() -> None:
    """Stale after a converter or a family changed: `python scripts/derive_renames.py`."""
    assert stored_renames() == derived_renames()


def test_families_without_model_code_have_no_renames() -> None:
    without = {f.name for f in FAMILIES if f.model is None}
    assert without and not without & set(stored_renames())
    assert rename("transformer_blocks.0.attn.to_q", "hunyuan-video") is None


def test_a_block_template_gives_the_block_number_of_the_name() -> None:
    assert rename("transformer_blocks.17.attn.add_k_proj", "flux") == "double_blocks.17.txt_attn.qkv"
    assert rename("single_transformer_blocks.37.proj_mlp", "flux") == "single_blocks.37.linear1"
    assert rename("transformer_blocks.x.attn.to_q", "flux") is None
    assert rename("norm_out.linear", "sd3") == "final_layer.adaLN_modulation.1"
