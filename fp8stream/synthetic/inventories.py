"""Layer inventories of real diffusion transformers (names and shapes as ComfyUI loads them).

Used to build benchmark checkpoints at real width: every FP8 linear of the transformer blocks
(modulation included) in ComfyUI's mixed-precision format, embedders, norms and final layers
in BF16, as typical FP8 exports ship them. `blocks` scales depth; width is always full.
Flux-dev and SD3.5-large are here; every other family has its own module beside this one.
"""

from __future__ import annotations

from fp8stream.synthetic import chroma, cosmos, flux2, hidream, hunyuan_video15, ltx2, lumina2, qwen_image, wan, z_image
from fp8stream.synthetic.spec import TensorSpec, linear


def flux_dev(blocks: int | None = None) -> list[TensorSpec]:
    """Flux.1-dev: hidden 3072, MLP 12288, 19 double and 38 single blocks (12B parameters)."""
    d, mlp = 3072, 12288
    double = 19 if blocks is None else blocks
    single = 38 if blocks is None else 2 * blocks
    specs: list[TensorSpec] = []
    specs += linear("img_in", d, 64, False) + linear("txt_in", d, 4096, False)
    for emb, in_f in (("time_in", 256), ("guidance_in", 256), ("vector_in", 768)):
        specs += linear(f"{emb}.in_layer", d, in_f, False) + linear(f"{emb}.out_layer", d, d, False)
    for i in range(double):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            specs += linear(f"{p}_mod.lin", 6 * d, d, True)
            specs += linear(f"{p}_attn.qkv", 3 * d, d, True) + linear(f"{p}_attn.proj", d, d, True)
            specs += [TensorSpec(f"{p}_attn.norm.query_norm.scale", (128,), False),
                      TensorSpec(f"{p}_attn.norm.key_norm.scale", (128,), False)]
            specs += linear(f"{p}_mlp.0", mlp, d, True) + linear(f"{p}_mlp.2", d, mlp, True)
    for i in range(single):
        p = f"single_blocks.{i}"
        specs += linear(f"{p}.linear1", 3 * d + mlp, d, True) + linear(f"{p}.linear2", d, d + mlp, True)
        specs += linear(f"{p}.modulation.lin", 3 * d, d, True)
        specs += [TensorSpec(f"{p}.norm.query_norm.scale", (128,), False),
                  TensorSpec(f"{p}.norm.key_norm.scale", (128,), False)]
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False) + linear("final_layer.linear", 64, d, False)
    return specs


def sd35_large(blocks: int | None = None) -> list[TensorSpec]:
    """SD3.5-large (MMDiT): hidden 2432, 38 joint blocks (8B parameters)."""
    d = 2432
    n = 38 if blocks is None else blocks
    specs: list[TensorSpec] = [TensorSpec("pos_embed", (1, 36864, d), False),
                               TensorSpec("x_embedder.proj.weight", (d, 16, 2, 2), False),
                               TensorSpec("x_embedder.proj.bias", (d,), False)]
    specs += linear("context_embedder", d, 4096, False)
    specs += linear("t_embedder.mlp.0", d, 256, False) + linear("t_embedder.mlp.2", d, d, False)
    specs += linear("y_embedder.mlp.0", d, 2048, False) + linear("y_embedder.mlp.2", d, d, False)
    for i in range(n):
        last = i == n - 1
        for part in ("x_block", "context_block"):
            p = f"joint_blocks.{i}.{part}"
            pre_only = last and part == "context_block"
            specs += linear(f"{p}.adaLN_modulation.1", (2 if pre_only else 6) * d, d, True)
            specs += linear(f"{p}.attn.qkv", 3 * d, d, True)
            specs += [TensorSpec(f"{p}.attn.ln_q.weight", (64,), False),
                      TensorSpec(f"{p}.attn.ln_k.weight", (64,), False)]
            if not pre_only:
                specs += linear(f"{p}.attn.proj", d, d, True)
                specs += linear(f"{p}.mlp.fc1", 4 * d, d, True) + linear(f"{p}.mlp.fc2", d, 4 * d, True)
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False) + linear("final_layer.linear", 64, d, False)
    return specs


# --arch names of scripts/bench.py; the other families have a module each beside this one
ARCHITECTURES = {"flux": flux_dev, "sd35": sd35_large, "wan": wan.wan_14b, "flux2": flux2.inventory,
                 "chroma": chroma.inventory, "qwen-image": qwen_image.inventory, "z-image": z_image.inventory,
                 "lumina2": lumina2.inventory, "hidream": hidream.inventory, "wan22-5b": wan.ti2v_5b,
                 "wan22-i2v-a14b": wan.i2v_a14b, "hunyuan-video-1.5": hunyuan_video15.t2v_720p,
                 "ltx2": ltx2.ltx2_19b, "cosmos-14b": cosmos.predict2_14b, "cosmos-2b": cosmos.predict2_2b}
