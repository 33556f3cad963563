"""diffusers module names -> ComfyUI (original) layer names, per family: data for matching stats
recorded on a diffusers model to a ComfyUI checkpoint ({0} = block index)."""

from __future__ import annotations

import re

_D = r"(\d+)"
# diffusers module name -> ComfyUI layer, per family ({0} = block index)
RENAMES: dict[str, list[tuple[str, str]]] = {
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


def rename(name: str, family: str) -> str | None:
    """A diffusers module name in the family's ComfyUI spelling (None: no table entry)."""
    for pat, out in RENAMES.get(family, []):
        m = re.fullmatch(pat, name)
        if m:
            return out.format(*m.groups())
    return None

