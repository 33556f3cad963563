"""The detection keys of every model family: data, tried in order, first match wins.

Keys are bare names (model prefix removed, names/prefixes.py). Where diffusers has a test
(`CHECKPOINT_KEY_NAMES` in diffusers/loaders/single_file_utils.py, 0.42) its keys are copied here
with the `model.diffusion_model.` duplicates dropped, in the order `infer_diffusers_model_type`
tries them; `ours` marks keys diffusers does not test (families it does not recognise from a
file, such as Qwen-Image whose files use diffusers' own names, and the layer-name keys that let
callers holding only linear-layer names detect the same family). The key names of ComfyUI's
files come from diffusers' converters and ComfyUI's own loader (`comfy/model_detection.py`).

Order matters where families share names: Flux.2 and Chroma carry Flux's `double_blocks`,
HunyuanVideo carries them too (so it comes before Flux, whose layer-name keys it would match),
Z-Image carries Lumina 2's `cap_embedder`, LTX-2 carries LTX-Video's `patchify_proj`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyRule:
    family: str  # our name: presets, the producer graph and the forward pass use it
    keys: tuple[str, ...]  # any one present -> this family
    origin: str  # where the keys come from: diffusers' CHECKPOINT_KEY_NAMES entry, or "ours"
    width_key: str = ""  # a tensor whose first dimension is the model width (for the report and variants)
    blocks: tuple[str, ...] = ()  # block-list prefixes, counted for the report ("19+38 blocks")
    extra_keys: tuple[str, ...] = ()  # ours, tried after the diffusers keys
    # ours, the last resort once no rule's key is present: any name under one of these prefixes
    # (a partial list of layers, e.g. a graph built for a few Flux layers)
    name_prefixes: tuple[str, ...] = ()


RULES: tuple[FamilyRule, ...] = (
    FamilyRule("sd3",
               ("joint_blocks.0.context_block.adaLN_modulation.1.bias", "joint_blocks.37.x_block.mlp.fc1.weight"),
               "diffusers: sd3, sd35_large", "x_embedder.proj.weight", ("joint_blocks.",),
               ("joint_blocks.0.x_block.attn.qkv.weight", "joint_blocks.0.context_block.attn.qkv.weight"),
               ("joint_blocks.",)),
    FamilyRule("flux2", ("single_stream_modulation.lin.weight",), "diffusers: flux2", "img_in.weight",
               ("double_blocks.", "single_blocks."), ("double_stream_modulation_img.lin.weight",)),
    FamilyRule("flux3", ("early_stream_modulations.image.lin.weight",), "diffusers: flux3", "img_in.weight"),
    FamilyRule("chroma", ("distilled_guidance_layer.in_proj.bias",), "diffusers: chroma", "img_in.weight",
               ("double_blocks.", "single_blocks."), ("distilled_guidance_layer.in_proj.weight",)),
    FamilyRule("hunyuan-video-1.5", ("cond_type_embedding.weight",), "ours (ComfyUI: use_cond_type_embedding)",
               "img_in.proj.weight", ("double_blocks.", "single_blocks."), ("vision_in.proj.0.weight",)),
    FamilyRule("hunyuan-video", ("txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias",),
               "diffusers: hunyuan-video", "img_in.proj.weight", ("double_blocks.", "single_blocks."),
               ("txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.weight",)),
    FamilyRule("flux", ("double_blocks.0.img_attn.norm.key_norm.scale",), "diffusers: flux", "img_in.weight",
               ("double_blocks.", "single_blocks."),
               ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"),
               ("double_blocks.", "single_blocks.")),
    FamilyRule("ltx2", ("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",), "diffusers: ltx2",
               "patchify_proj.weight", ("transformer_blocks.",), ("audio_adaln_single.linear.weight",)),
    FamilyRule("ltx-video", ("patchify_proj.weight", "transformer_blocks.27.scale_shift_table"), "diffusers: ltx-video",
               "patchify_proj.weight", ("transformer_blocks.",)),
    FamilyRule("mochi", ("blocks.0.attn.qkv_x.weight",), "diffusers: mochi-1-preview"),
    FamilyRule("auraflow", ("double_layers.0.attn.w2q.weight",), "diffusers: auraflow"),
    FamilyRule("z-image", ("layers.0.adaLN_modulation.0.weight",), "diffusers: z-image-turbo", "x_embedder.weight",
               ("layers.",)),
    FamilyRule("lumina2", ("cap_embedder.0.weight",), "diffusers: lumina2", "x_embedder.weight", ("layers.",),
               ("layers.0.adaLN_modulation.1.weight",)),
    FamilyRule("sana", ("blocks.0.cross_attn.q_linear.weight",), "diffusers: sana"),
    FamilyRule("wan", ("head.modulation",), "diffusers: wan", "patch_embedding.weight", ("blocks.",),
               ("blocks.0.self_attn.q.weight", "blocks.0.cross_attn.q.weight")),
    FamilyRule("qwen-image-2.1", ("txt_in.text_norm.weight",), "diffusers: qwen-image-2.1"),
    FamilyRule("krea2", ("txtfusion.projector.weight",), "diffusers: krea2"),
    FamilyRule("hidream", ("double_stream_blocks.0.block.adaLN_modulation.1.bias",), "diffusers: hidream",
               "x_embedder.proj.weight", ("double_stream_blocks.", "single_stream_blocks."),
               ("double_stream_blocks.0.block.adaLN_modulation.1.weight",)),
    FamilyRule("cosmos", ("blocks.block0.blocks.0.block.attn.to_q.0.weight", "blocks.0.self_attn.q_proj.weight"),
               "diffusers: cosmos-1.0, cosmos-2.0", "x_embedder.proj.1.weight", ("blocks.",)),
    # Qwen-Image (and its edit models): ComfyUI's files use diffusers' names; ComfyUI tests txt_norm
    FamilyRule("qwen-image", ("txt_norm.weight",), "ours (ComfyUI: txt_norm)", "img_in.weight",
               ("transformer_blocks.",), ("transformer_blocks.0.img_mod.1.weight",)),
    # text encoders (ComfyUI's files use transformers' names)
    FamilyRule("bert", ("encoder.layer.0.attention.self.query.weight",), "ours", "", ("encoder.layer.",)),
    FamilyRule("t5", ("encoder.block.0.layer.0.SelfAttention.q.weight",), "ours (T5, UMT5)", "shared.weight",
               ("encoder.block.",), name_prefixes=("encoder.block.",)),
    FamilyRule("clip", ("text_model.encoder.layers.0.self_attn.q_proj.weight",), "ours (CLIP-L/G text)", "",
               ("text_model.encoder.layers.",), name_prefixes=("text_model.encoder.layers.",)),
    FamilyRule("llm", ("layers.0.self_attn.q_proj.weight",), "ours (Qwen, Llama/Mistral, Gemma)", "",
               ("layers.",), ("model.layers.0.self_attn.q_proj.weight",)),  # under text_encoders.X.transformer.
)
