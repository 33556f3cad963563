"""fp8stream: give FP8-quantized diffusion checkpoints correct activation scales, one layer at a time."""

__version__ = "0.1.0"
