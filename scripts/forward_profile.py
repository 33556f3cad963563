"""Where the forward pass's time goes on one checkpoint: imports, `prepare` (header only: the
family, diffusers' converter on the header), the conditioning path (the model on meta
tensors), then the pass twice (the first as cold as the page cache was; the second from it).

    python scripts/forward_profile.py flux.safetensors --device cuda

Drop the page cache first for a cold first pass (`sync; echo 3 > /proc/sys/vm/drop_caches`).
"""

from __future__ import annotations

import argparse
import time

start = time.monotonic()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import diffusers  # noqa: F401
    import torch

    from fp8stream.io.reader import LazyFile
    from fp8stream.io.source import TensorSource
    from fp8stream.methods.forward.conditioning import from_shapes
    from fp8stream.methods.forward.forward_pass import PassSettings, prepare, run

    print(f"imports (python, torch, diffusers, fp8stream): {time.monotonic() - start:.2f} s", flush=True)
    with LazyFile(args.checkpoint) as f:
        header = f.header
    t = time.monotonic()
    prepared = prepare(header)
    print(f"prepare: {time.monotonic() - t:.2f} s ({prepared.reason or 'ready'})", flush=True)
    if prepared.reason is None:
        t = time.monotonic()
        path = from_shapes(prepared)
        found = "none: the pass itself finds it" if path is None else f"{len(path.order)} weights"
        print(f"conditioning path on meta tensors: {time.monotonic() - t:.2f} s ({found})", flush=True)
    for label in ("first pass", "second pass (page cache)"):
        with TensorSource.for_file(args.checkpoint, header) as src:
            t = time.monotonic()
            result = run(src, prepared, PassSettings(device=args.device))
            if args.device == "cuda":
                torch.cuda.synchronize()
            print(f"{label}: {time.monotonic() - t:.2f} s, {result.weights_read} Linear weights", flush=True)


if __name__ == "__main__":
    main()
