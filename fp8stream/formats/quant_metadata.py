"""`__metadata__["_quantization_metadata"]`: the header-level copy of every layer's `comfy_quant`.

When it is present ComfyUI rebuilds each listed layer's `comfy_quant` from it and ignores the
tensors (docs/comfyui.md), so what we write there must say exactly what the marker tensors say.
Layer names in it may carry the file's prefix or not; lookups accept both spellings and
rewrites keep the metadata's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fp8stream.errors import InvalidCheckpointError
from fp8stream.names.prefixes import bare_name

QUANT_METADATA_KEY = "_quantization_metadata"


@dataclass
class QuantMetadata:
    """The parsed document and an index from layer names (both spellings) to its own keys."""

    doc: dict
    keys: dict[str, str]
    # its keys whose entry is a bare format name (read here as {"format": name}): ComfyUI's
    # loader reads each entry as an object and stops with an error on these (docs/comfyui.md)
    bare: frozenset[str] = frozenset()

    @property
    def layers(self) -> dict[str, dict]:
        return self.doc["layers"]

    def key_for(self, layer_name: str) -> str | None:
        """The metadata's key for a layer, or None when it does not list it."""
        return self.keys.get(layer_name) or self.keys.get(bare_name(layer_name))

    def layer_doc(self, layer_name: str) -> dict | None:
        key = self.key_for(layer_name)
        return self.layers[key] if key is not None else None

    def is_bare(self, layer_name: str) -> bool:
        """Whether the layer's entry was a bare format name, not an object."""
        return self.key_for(layer_name) in self.bare


def read_quant_metadata(metadata: dict[str, str] | None) -> QuantMetadata | None:
    """The parsed `_quantization_metadata`, None when absent; InvalidCheckpointError when malformed."""
    if not metadata or QUANT_METADATA_KEY not in metadata:
        return None
    try:
        doc = json.loads(metadata[QUANT_METADATA_KEY])
    except ValueError:
        raise InvalidCheckpointError(f"__metadata__[{QUANT_METADATA_KEY!r}] is not JSON") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, dict):
        raise InvalidCheckpointError(f"__metadata__[{QUANT_METADATA_KEY!r}] has no 'layers' object")
    bare = set()
    for name, value in list(layers.items()):
        if isinstance(value, str):  # some writers store the bare format name
            layers[name] = {"format": value}
            bare.add(name)
        elif not isinstance(value, dict):
            raise InvalidCheckpointError(f"__metadata__[{QUANT_METADATA_KEY!r}]: layer {name!r} is not an object")
    keys: dict[str, str] = {}
    for name in layers:
        keys.setdefault(bare_name(name), name)
        keys[name] = name
    return QuantMetadata(doc, keys, frozenset(bare))


def synced_quant_metadata(meta: QuantMetadata, docs: dict[str, dict]) -> str:
    """The metadata JSON with each layer in `docs` (file spelling) set to its new marker document."""
    out = json.loads(json.dumps(meta.doc))
    for layer_name, doc in docs.items():
        key = meta.key_for(layer_name) or layer_name
        out["layers"][key] = doc
    return json.dumps(out, separators=(",", ":"))
