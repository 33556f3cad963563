"""Which layers get an activation scale: --include / --exclude globs and per-architecture presets.

Patterns and presets see names with the model prefix removed (and patterns the file's own
spelling too), so `model.diffusion_model.` checkpoints select the same layers as bare ones.
Presets keep the layers that reference recipes keep in high precision (docs/scales.md): embedders,
final projections, and for video DiTs the first and last blocks.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from fp8stream.errors import UsageError
from fp8stream.families.detect import detect_family
from fp8stream.names.prefixes import bare_name

# preset -> [(glob on the bare name, why)]
PRESETS: dict[str, list[tuple[str, str]]] = {
    "flux": [
        ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("vector_in.*", "embedder"),
        ("guidance_in.*", "embedder"), ("final_layer.*", "final projection"),
        # diffusers spelling
        ("x_embedder", "embedder"), ("context_embedder", "embedder"), ("time_text_embed.*", "embedder"),
        ("norm_out.*", "final projection"), ("proj_out", "final projection"),
    ],
    "sd3": [
        ("x_embedder.*", "embedder"), ("context_embedder", "embedder"), ("t_embedder.*", "embedder"),
        ("y_embedder.*", "embedder"), ("final_layer.*", "final projection"),
        ("time_text_embed.*", "embedder"), ("norm_out.*", "final projection"), ("proj_out", "final projection"),
    ],
    "wan": [
        ("patch_embedding", "embedder"), ("text_embedding.*", "embedder"), ("time_embedding.*", "embedder"),
        ("time_projection.*", "embedder"), ("img_emb.*", "embedder"), ("head.*", "final projection"),
        ("condition_embedder.*", "embedder"), ("proj_out", "final projection"),
    ],
    "flux2": [
        ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("guidance_in.*", "embedder"),
        ("final_layer.*", "final projection"),
    ],
    "chroma": [
        ("img_in", "embedder"), ("txt_in", "embedder"),
        ("distilled_guidance_layer.*", "embedder (modulation approximator)"),
        ("final_layer.*", "final projection"),
    ],
    "qwen-image": [  # diffusers' names
        ("img_in", "embedder"), ("txt_in", "embedder"), ("time_text_embed.*", "embedder"),
        ("norm_out.*", "final projection"), ("proj_out", "final projection"),
    ],
    "z-image": [
        ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
        ("final_layer.*", "final projection"),
    ],
    "lumina2": [
        ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
        ("final_layer.*", "final projection"),
    ],
    "hidream": [  # diffusers' names
        ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("p_embedder.*", "embedder"),
        ("caption_projection.*", "embedder"), ("final_layer.*", "final projection"),
    ],
    "hunyuan-video-1.5": [
        ("img_in.*", "embedder"), ("time_in.*", "embedder"), ("time_r_in.*", "embedder"),
        ("txt_in.*", "text embedder (token refiner)"), ("byt5_in.*", "embedder"), ("vision_in.*", "embedder"),
        ("final_layer.*", "final projection"),
    ],
    "ltx2": [
        ("patchify_proj", "embedder"), ("audio_patchify_proj", "embedder"), ("*adaln_single.*", "embedder"),
        ("caption_projection.*", "embedder"), ("audio_caption_projection.*", "embedder"),
        ("*_embeddings_connector.*", "text connector"), ("proj_out", "final projection"),
        ("audio_proj_out", "final projection"),
    ],
    "cosmos": [
        ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("crossattn_proj.*", "embedder"),
        ("img_context_proj.*", "embedder"), ("final_layer.*", "final projection"),
    ],
}
# Video DiTs keep their first and last blocks in high precision too.
EDGE_BLOCKS = {"wan": re.compile(r"^blocks\.(\d+)\."), "hunyuan-video-1.5": re.compile(r"^double_blocks\.(\d+)\."),
               "ltx2": re.compile(r"^transformer_blocks\.(\d+)\."), "cosmos": re.compile(r"^blocks\.(?:block)?(\d+)\.")}
PRESET_NAMES = ("auto", *PRESETS)


@dataclass(frozen=True)
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    preset: str | None = None


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(bare_name(name), pattern)


def excluded_layers(layer_names: list[str], all_names: list[str], selection: Selection) -> dict[str, str]:
    """{layer name: why} for every layer the selection leaves out of FP8 activations."""
    out: dict[str, str] = {}
    preset = selection.preset
    if preset == "auto":
        family = detect_family(all_names)
        if family not in PRESETS:
            what = f"no preset for family {family}" if family else "model family not recognised"
            raise UsageError(f"--preset auto: {what} (use --preset {'|'.join(PRESETS)})")
        preset = family
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"--preset {preset}: unknown (choose from {', '.join(PRESET_NAMES)})")
    edge: set[int] = set()
    if preset in EDGE_BLOCKS:
        numbers = {int(m.group(1)) for n in layer_names if (m := EDGE_BLOCKS[preset].match(bare_name(n)))}
        if numbers:
            edge = {min(numbers), max(numbers)}
    for name in layer_names:
        bare = bare_name(name)
        if selection.include and not any(_matches(p, name) for p in selection.include):
            out[name] = "not matched by --include"
            continue
        hit = next((p for p in selection.exclude if _matches(p, name)), None)
        if hit is not None:
            out[name] = f"--exclude {hit}"
            continue
        if preset is None:
            continue
        why = next((w for p, w in PRESETS[preset] if fnmatch.fnmatchcase(bare, p)), None)
        if why is None and edge and (m := EDGE_BLOCKS[preset].match(bare)) and int(m.group(1)) in edge:
            why = "first/last block of a video DiT"
        if why is not None:
            out[name] = f"preset {preset}: {why}"
    return out
