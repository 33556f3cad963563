"""The forward pass's settings (methods/forward/, used by --method forward and auto). Beside
the package, not in it: CalibrationSettings (settings.py) gathers every method's, and forward/ imports it.
Imports no torch: --help reads it."""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.options import FORWARD, flag

MICRO_BATCH_TOKENS = 2048  # the default micro-batch holds as many samples as fit in this
# the pass's read-ahead (methods/forward/prefetch.py), at most, by device; here (torch-free) for the batch's
# memory estimate too (fp8stream/memory.py)
READ_AHEAD_BYTES = {"cuda": 512 << 20, "cpu": 128 << 20}


@dataclass(frozen=True, kw_only=True)
class ForwardSettings:
    # scale = margin x forward amax; None: the family's (methods/forward/forward_method.py)
    forward_margin: float | None = flag(
        None, "--forward-margin", section=FORWARD, type="float", range=(1.0, 1e6),
        help="scale = MARGIN x the forward pass's input amax (capped by the hard bound) "
             "[default: 3 for DiTs, 2 for text encoders].")
    forward_batch: int = flag(4, "--forward-batch", section=FORWARD, type="int", range=(1, 4096),
                              help="Synthetic samples (timesteps over [0,1], text scales, guidance values).")
    forward_tokens: int = flag(256, "--forward-tokens", section=FORWARD, type="int", range=(1, 1 << 20),
                               help="Latent tokens per sample.")
    forward_text_tokens: int = flag(128, "--forward-text-tokens", section=FORWARD, type="int", range=(1, 1 << 20),
                                    help="Text tokens per sample.")
    forward_micro_batch: int | None = flag(  # None: micro_batch_for()
        None, "--forward-micro-batch", section=FORWARD, type="int", range=(1, 4096),
        help="Samples run through the model at once; every micro-batch passes a layer while its weight is "
             "loaded (read once), so this bounds the activations "
             "[default: as many as fit in 2048 tokens, at most the batch].")
    forward_threads: int = flag(2, "--forward-threads", section=FORWARD, type="int", range=(1, 256),
                                help="Torch threads for the pass (fixed: the same bytes whatever --jobs is).")
    forward_conditioning: str = flag(
        "weight-only", "--forward-conditioning", section=FORWARD, choices=("weight-only", "fp8"),
        help="Layers that read one vector per sample (timestep/guidance/pooled embedders, AdaLN modulation) stay "
             "weight-only (at most a quarter of the layers; those that follow the sampling step's time first), "
             "or get FP8 scales too.")
    # calibrate's prediction (methods/forward/prediction.py): more streams beside the pass, which only
    # observe; not recorded in the output's metadata (the same scales either way). Off by default: it
    # costs about 3x the default's time and +750 MB on the CPU (2-block Flux-dev, docs/speed.md),
    # which the default's speed and memory bars do not allow
    predict: bool = flag(False, "--predict/--no-predict", section=FORWARD, type="bool",
                         help="The pass also runs the output as ComfyUI will run it, and dynamic FP8, and the "
                              "report predicts its quality as `fp8stream check OUT` would (one line; --json and "
                              "--verbose: per layer). Costs about 3x the default's time on the CPU and more "
                              "memory; `fp8stream check OUT` gives the same figures later.")
    # an opt-in bound for the layers the forward pass cannot reach
    assume_input_rms: float | None = flag(
        None, "--assume-input-rms", section=FORWARD, type="float", range=(0.0, None), min_open=True,
        help="Layers the forward pass cannot reach and whose bound needs an assumption about the model's inputs "
             "get that bound with inputs of rms <= R, instead of staying weight-only [default: no assumption].")


def micro_batch_for(batch: int, image_tokens: int, text_tokens: int) -> int:
    """The forward pass's default micro-batch: the samples whose image and text tokens fit
    MICRO_BATCH_TOKENS (at least one, at most the batch). The defaults (4 samples of 256 + 128
    tokens) run as one; more tokens or samples run in micro-batches, so the activations stay
    those of about 2,000 tokens. From the options alone: the same on every device."""
    return max(1, min(batch, MICRO_BATCH_TOKENS // max(1, image_tokens + text_tokens)))
