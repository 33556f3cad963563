"""Video families from the header alone: presets keep what reference recipes keep in high
precision (embedders, final projections, first and last blocks), shared-scale groups join only
the layers that read one tensor (a cross-attention's q reads another stream than its k and v)."""

from __future__ import annotations

from fp8stream.formats.groups import shared_scale_groups
from fp8stream.formats.selection import Selection, excluded_layers

P = "model.diffusion_model."


def _excluded(preset: str, layers: list[str]) -> set[str]:
    return set(excluded_layers(layers, layers, Selection(preset=preset)))


def test_ltx2_groups_follow_the_streams_each_projection_reads():
    attns = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
    names = [f"{P}transformer_blocks.0.{a}.to_{x}" for a in attns for x in "qkv"]
    groups = {tuple(n.rsplit(".", 2)[1] + "." + n.rsplit(".", 1)[1] for n in g) for g in shared_scale_groups(names)}
    assert groups == {("attn1.to_q", "attn1.to_k", "attn1.to_v"),
                      ("audio_attn1.to_q", "audio_attn1.to_k", "audio_attn1.to_v"),
                      ("attn2.to_k", "attn2.to_v"), ("audio_attn2.to_k", "audio_attn2.to_v"),
                      ("audio_to_video_attn.to_k", "audio_to_video_attn.to_v"),
                      ("video_to_audio_attn.to_k", "video_to_audio_attn.to_v")}


def test_cosmos_cross_attention_query_stays_alone():
    names = [f"blocks.3.{a}.{x}_proj" for a in ("self_attn", "cross_attn") for x in "qkv"]
    assert shared_scale_groups(names) == [names[:3], names[4:]]


def test_hunyuan_video15_split_qkv_is_one_group_per_stream():
    names = [f"double_blocks.0.{s}_attn_{x}" for s in ("img", "txt") for x in "qkv"] + ["double_blocks.0.img_attn_proj"]
    assert shared_scale_groups(names) == [names[:3], names[3:6]]


def test_video_presets_keep_embedders_final_projections_and_edge_blocks():
    cases = {
        "hunyuan-video-1.5": (["time_in.mlp.0", "txt_in.individual_token_refiner.blocks.0.self_attn_qkv", "byt5_in.fc1",
                               "vision_in.proj.1", "final_layer.linear", "double_blocks.0.img_attn_qkv",
                               "double_blocks.3.img_attn_qkv"], "double_blocks.{}.img_mlp.fc1"),
        "ltx2": (["patchify_proj", "audio_adaln_single.linear", "av_ca_a2v_gate_adaln_single.linear",
                  "caption_projection.linear_1", "proj_out", "audio_proj_out", "transformer_blocks.0.attn1.to_q",
                  "transformer_blocks.3.ff.net.2"], "transformer_blocks.{}.attn1.to_q"),
        "cosmos": (["x_embedder.proj.1", "t_embedder.1.linear_1", "final_layer.linear", "blocks.0.self_attn.q_proj",
                    "blocks.3.mlp.layer2"], "blocks.{}.mlp.layer1"),
    }
    for preset, (kept, middle) in cases.items():
        layers = [P + n for n in kept] + [P + middle.format(i) for i in (1, 2)]
        assert _excluded(preset, layers) == {P + n for n in kept}, preset
