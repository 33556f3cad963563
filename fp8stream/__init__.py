"""fp8stream: give FP8-quantized diffusion checkpoints correct activation scales, one layer at a time."""

from fp8stream.version import __version__  # noqa: F401


def record(model, path=None, only=None):
    """Record every nn.Linear's input range of a torch model (see fp8stream.methods.stats.recorder)."""
    from fp8stream.methods.stats.recorder import record as _record

    return _record(model, path, only)
