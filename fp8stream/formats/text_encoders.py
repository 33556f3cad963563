"""Text-encoder layers: ComfyUI runs them weight-only (docs/comfyui.md).

We calibrate them all the same (other runtimes use the scales) and say in the report that
ComfyUI will not. Which layers are a text encoder's: families.is_text_encoder_layer.
"""

from __future__ import annotations

TEXT_ENCODER_NOTE = "text encoder: ComfyUI runs it weight-only whatever the file says (scale for other runtimes)"
