"""Key prefixes checkpoints are saved with (`model.diffusion_model.`, ...): the one list.

Reports and written keys keep the file's own spelling; presets, groups, patterns, the producer
graph, stats name matching and sampling seeds look at the name with the prefix removed, so a
prefixed checkpoint is treated exactly like a bare one.
"""

from __future__ import annotations

import re

# Tried in order, longest first: the first that matches is removed. `model.` alone comes last
# (a wrapper module, e.g. stats recorded on `model.transformer_blocks...`). `net.`: Cosmos' own files.
MODEL_PREFIXES = (
    r"model\.diffusion_model\.", r"diffusion_model\.", r"transformer\.", r"unet\.", r"model\.model\.",
    r"text_encoders\.[^.]+\.transformer\.", r"text_encoders\.[^.]+\.", r"cond_stage_model\.(?:[^.]+\.)?transformer\.",
    r"net\.", r"model\.",
)
_PREFIX_RE = re.compile("^(" + "|".join(MODEL_PREFIXES) + ")")


def split_prefix(name: str) -> tuple[str, str]:
    """(prefix, bare name): `model.diffusion_model.blocks.0.x` -> (`model.diffusion_model.`, `blocks.0.x`)."""
    m = _PREFIX_RE.match(name)
    return (m.group(0), name[m.end():]) if m else ("", name)


def bare_name(name: str) -> str:
    return split_prefix(name)[1]


def common_model_prefix(names) -> str:
    """The prefix all names share, when they share one known prefix; else ''."""
    prefixes = {split_prefix(n)[0] for n in names}
    return prefixes.pop() if len(prefixes) == 1 else ""
