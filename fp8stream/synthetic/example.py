"""The small built-in example: a two-block Flux-style DiT, FP8 in ComfyUI's format, as
Comfy-Org's own exporter writes it (weight-only flag, input_scale = 1.0 placeholders)."""

from __future__ import annotations

import torch

from fp8stream.synthetic.checkpoint import SyntheticTensor, bf16_tensor, comfy_fp8_linear, write_checkpoint


def example_tensors(hidden: int = 256, blocks: int = 2, seed: int = 0) -> list[SyntheticTensor]:
    g = torch.Generator().manual_seed(seed)

    def w(out_f: int, in_f: int) -> torch.Tensor:
        return torch.randn(out_f, in_f, generator=g) / in_f**0.5

    tensors: list[SyntheticTensor] = [bf16_tensor("img_in.weight", w(hidden, 64)),
                                      bf16_tensor("img_in.bias", torch.zeros(hidden))]
    # The conditioning embedders: the simulate method evaluates them over the timestep sweep.
    for emb, in_f in (("time_in", 256), ("guidance_in", 256), ("vector_in", 768)):
        tensors += [bf16_tensor(f"{emb}.in_layer.weight", w(hidden, in_f)),
                    bf16_tensor(f"{emb}.in_layer.bias", torch.zeros(hidden)),
                    bf16_tensor(f"{emb}.out_layer.weight", w(hidden, hidden)),
                    bf16_tensor(f"{emb}.out_layer.bias", torch.zeros(hidden))]
    for i in range(blocks):
        p = f"double_blocks.{i}"
        for stream in ("img", "txt"):
            layers = {
                f"{p}.{stream}_attn.qkv": (3 * hidden, hidden),
                f"{p}.{stream}_attn.proj": (hidden, hidden),
                f"{p}.{stream}_mlp.0": (4 * hidden, hidden),
                f"{p}.{stream}_mlp.2": (hidden, 4 * hidden),
            }
            for name, shape in layers.items():
                tensors += comfy_fp8_linear(name, w(*shape), input_scale=1.0, weight_only=True, bias=True)
            tensors.append(bf16_tensor(f"{p}.{stream}_mod.lin.weight", w(6 * hidden, hidden)))
            tensors.append(bf16_tensor(f"{p}.{stream}_mod.lin.bias", torch.zeros(6 * hidden)))
            tensors.append(bf16_tensor(f"{p}.{stream}_attn.norm.query_norm.scale", torch.ones(hidden // 4)))
    tensors.append(bf16_tensor("final_layer.linear.weight", w(64, hidden)))
    return tensors


def write_example(path: str, **kwargs: int) -> None:
    write_checkpoint(path, example_tensors(**kwargs), metadata={"modelspec.title": "fp8stream example"})
