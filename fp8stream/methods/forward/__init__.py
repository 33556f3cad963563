"""The streaming synthetic forward pass (`--method forward`): a model's own diffusers code run
over synthetic inputs with the checkpoint's weights, one Linear at a time. Needs diffusers
(`pip install fp8stream[forward]`); imported only when the method is chosen."""

from __future__ import annotations
