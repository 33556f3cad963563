"""Which model family a checkpoint is, from its header alone (torch-free): the one detector.

Presets, the producer graph of `--method simulate`, stats name matching, the forward pass,
`inspect` and the calibration report all ask `detect`. Names lose their model prefix first
(names/prefixes.py); then the rules of family_keys.py are tried in order and the first whose
detection key is present decides (diffusers' own test never says "unknown": anything it does not
know comes back as `v1`; here it is None). A key counts as present when the file holds it, or
holds it as a layer name (the key minus `.weight`/`.bias`): some callers know only layer names.

Variants come from the shapes, not from which block numbers exist (diffusers labels Flux.2
klein as dev, Wan 2.2 TI2V-5B as i2v-14B and a pruned SD3.5 as `v1`): the width of the
family's input projection, its input channels and the block counts decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from fp8stream.formats.family_keys import RULES, FamilyRule
from fp8stream.names.prefixes import split_prefix

Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class Detection:
    family: str  # flux, flux2, sd3, wan, qwen-image, ... (family_keys.RULES)
    variant: str  # the named model the shapes fit (flux2-klein-4b), else the family
    key: str  # the detection key found (bare name)
    origin: str  # where the key test comes from (diffusers' CHECKPOINT_KEY_NAMES entry, or ours)
    prefix: str = ""  # the model prefix the file's names carry
    width: int | None = None
    blocks: tuple[int, ...] = ()

    def describe(self) -> str:
        """`flux2-klein-4b (width 3072, 5+20 blocks; key single_stream_modulation.lin.weight)`."""
        sizes = []
        if self.width:
            sizes.append(f"width {self.width}")
        if self.blocks:
            one = self.blocks == (1,)
            sizes.append("+".join(map(str, self.blocks)) + (" block" if one else " blocks"))
        return f"{self.variant} ({', '.join(sizes)}; key {self.key})" if sizes else f"{self.variant} (key {self.key})"

    def to_json(self) -> dict:
        return {"family": self.family, "variant": self.variant, "key": self.key, "origin": self.origin,
                "width": self.width, "blocks": list(self.blocks), "summary": self.describe()}


def detect(shapes: Shapes | Iterable[str]) -> Detection | None:
    """The family of a header ({name: shape}), or of bare names (then without sizes)."""
    table = dict(shapes) if isinstance(shapes, Mapping) else {n: () for n in shapes}
    prefixes: dict[str, int] = {}
    bare: dict[str, Sequence[int]] = {}
    for name, shape in table.items():
        prefix, short = split_prefix(name)
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
        bare[short] = shape
    layers = {n.rsplit(".", 1)[0] for n in bare if n.endswith((".weight", ".bias"))} | set(bare)
    prefix = max(prefixes, key=prefixes.get) if prefixes else ""
    for rule in RULES:
        key = next((k for k in rule.keys + rule.extra_keys if k in bare or k.rsplit(".", 1)[0] in layers), None)
        if key is not None:
            return _sized(rule, key, prefix, bare)
    for rule in (r for r in RULES if r.name_prefixes):  # the last resort: a name under a block prefix
        key = next((n for n in sorted(bare) if n.startswith(rule.name_prefixes)), None)
        if key is not None:
            return _sized(rule, key, prefix, bare)
    return None


def header_shapes(header) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a parsed header (fp8stream.io.header.Header)."""
    return {t.name: tuple(t.shape) for t in header.tensors}


def detect_family(names: Iterable[str]) -> str | None:
    """The family name only (flux, sd3, wan, bert, ...), or None."""
    found = detect(names)
    return found.family if found else None


def _sized(rule: FamilyRule, key: str, prefix: str, bare: Mapping[str, Sequence[int]]) -> Detection:
    width_shape = bare.get(rule.width_key) or ()
    width = int(width_shape[0]) if width_shape else None
    blocks = tuple(n for n in (count_blocks(bare, p) for p in rule.blocks) if n)
    variant = VARIANTS.get(rule.family, _family_only)(rule.family, bare, width, blocks)
    return Detection(rule.family, variant, key, rule.origin, prefix, width, blocks)


def count_blocks(names: Iterable[str], prefix: str) -> int:
    """How many `prefix.N.` blocks the names hold (highest N + 1)."""
    found = [int(part) for k in names if k.startswith(prefix)
             for part in (k[len(prefix):].split(".", 1)[0],) if part.isdigit()]
    return max(found) + 1 if found else 0


def _family_only(family: str, bare, width, blocks) -> str:
    return family


def _flux(family: str, bare, width, blocks) -> str:
    if "guidance_in.in_layer.weight" not in bare and "guidance_in.in_layer" not in bare:
        return "flux-schnell" if bare.get("img_in.weight") else "flux"
    channels = (bare.get("img_in.weight") or (0, 0))[1]
    return {384: "flux-fill", 128: "flux-depth"}.get(channels, "flux-dev")


# Flux.2: dev is 6144 wide (8+48 blocks); klein 4B 3072 (5+20), klein 9B 4096 (8+24)
FLUX2_WIDTHS = {6144: "flux2-dev", 3072: "flux2-klein-4b", 4096: "flux2-klein-9b"}


def _flux2(family: str, bare, width, blocks) -> str:
    return FLUX2_WIDTHS.get(width, "flux2")


def _sd3(family: str, bare, width, blocks) -> str:
    """SD3 medium and SD3.5 medium are 1536 wide (24 blocks; 3.5 has the second attention),
    SD3.5 large 2432 (38 blocks); fewer blocks than the full model: pruned."""
    dual = any(k.endswith(".x_block.attn2.qkv.weight") for k in bare)
    name, full = {1536: ("sd3.5-medium" if dual else "sd3-medium", 24),
                  2432: ("sd3.5-large", 38)}.get(width, ("sd3", 0))
    if full and blocks and blocks[0] < full:
        return f"{name} pruned to {blocks[0]} blocks"
    return name


def _wan(family: str, bare, width, blocks) -> str:
    """By width and input channels: 1.3B is 1536 wide, 14B 5120, Wan 2.2 TI2V-5B 3072 with 48
    channels; 16 channels is text-to-video, 36 image-to-video (2.1 has CLIP's img_emb, 2.2 not)."""
    channels = (bare.get("patch_embedding.weight") or (0, 0))[1]
    if "vace_blocks.0.after_proj.bias" in bare:
        return {1536: "wan-vace-1.3B", 5120: "wan-vace-14B"}.get(width, "wan-vace")
    if width == 3072 and channels == 48:
        return "wan2.2-ti2v-5B"
    size = {1536: "1.3B", 5120: "14B"}.get(width)
    if size is None:
        return "wan"
    if channels == 16:
        return f"wan-t2v-{size}"
    image = "img_emb.proj.1.weight" in bare
    return f"wan2.1-i2v-{size}" if image else f"wan2.2-i2v-{size}"


def _has(bare, key: str) -> bool:
    """A tensor the file holds, or a layer of that name (callers that know only layer names)."""
    return key in bare or key.rsplit(".", 1)[0] in bare


def _ltx2(family: str, bare, width, blocks) -> str:
    """LTX-2.3 gates its attentions (one logit per head) and modulates the text cross-attention."""
    return "ltx-2.3" if _has(bare, "transformer_blocks.0.attn1.to_gate_logits.weight") else "ltx-2"


def _cosmos(family: str, bare, width, blocks) -> str:
    """Cosmos 1.0 nests its blocks (blocks.blockN.blocks.M.block); Predict2 2B is 2048 wide, 14B 5120."""
    if _has(bare, "blocks.block0.blocks.0.block.attn.to_q.0.weight"):
        return {4096: "cosmos-1.0-7B", 5120: "cosmos-1.0-14B"}.get(width, "cosmos-1.0")
    return {2048: "cosmos-predict2-2B", 5120: "cosmos-predict2-14B"}.get(width, "cosmos-predict2")


VARIANTS = {"flux": _flux, "flux2": _flux2, "sd3": _sd3, "wan": _wan, "ltx2": _ltx2, "cosmos": _cosmos}
