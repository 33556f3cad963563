"""The peer: what a user would otherwise run. Loads the whole checkpoint, adds an input_scale per
FP8 layer (weight_scale x 0.5, the research note's zero-cost heuristic, so the cost measured is
the load and save, not the maths), saves it. Peak RAM about twice the model (docs/methods.md).

    python scripts/naive_calibrate.py IN OUT
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file


def main(src: str, dst: str) -> None:
    tensors = load_file(src)
    for name in [n for n in tensors if n.endswith(".weight") and tensors[n].dtype == torch.float8_e4m3fn]:
        layer = name[: -len(".weight")]
        if f"{layer}.weight_scale" in tensors:
            tensors[f"{layer}.input_scale"] = (tensors[f"{layer}.weight_scale"].float() * 0.5).reshape(())
    save_file(tensors, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
