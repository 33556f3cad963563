"""The streaming synthetic forward pass (`--method forward`): a model's own diffusers code run
over synthetic inputs with the checkpoint's weights, one Linear at a time. Needs diffusers
(`pip install fp8stream[forward]`); imported only when the method is chosen."""

from __future__ import annotations


def run(source, header, settings=None):
    """See fp8stream.forward.run.run."""
    from fp8stream.forward.run import ForwardSettings, run as _run

    return _run(source, header, settings or ForwardSettings())
