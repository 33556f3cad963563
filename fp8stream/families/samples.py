"""Synthetic inputs for the forward pass: one batch of samples spread over the sampling run.

Sample i of B has the flow-matching time t_i (evenly over [0, 1], both ends included: the
first and last steps of a sampler), a Gaussian latent x_t = (1 - t) x0 + t eps, Gaussian text
states and pooled vectors of rms s_i (geometric over [TEXT_RMS_LO, TEXT_RMS_HI], in the reverse
order of t so that scales and times mix) and, for guidance-distilled models, a guidance value
g_i over [GUIDANCE_LO, GUIDANCE_HI]. The LayerNorms before each attention and MLP make the
inner layers insensitive to the text scale; the sweep covers the layers that read it directly.
Every draw comes from one CPU generator seeded by `seed`: the same inputs on every device.

Micro-batches: a plan for samples [start, stop) draws the whole batch's values in the same
order and keeps its rows, so any split into micro-batches feeds the model the very samples of
the whole batch. Families draw through `randn`, `text` and `pooled` (never `generator` with
their own batch size), and read the schedule through `timesteps`, `guidance`, `text_rms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

TEXT_RMS_LO, TEXT_RMS_HI = 0.5, 2.0
GUIDANCE_LO, GUIDANCE_HI = 1.0, 6.0


@dataclass
class SamplePlan:
    batch: int = 4
    image_tokens: int = 256
    text_tokens: int = 128
    seed: int = 0
    start: int = 0  # this micro-batch's samples: [start, stop) of the batch
    stop: int | None = None  # None: to the end of the batch
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.rows = slice(self.start, self.batch if self.stop is None else self.stop)

    @property
    def size(self) -> int:
        """Samples in this micro-batch."""
        return self.rows.stop - self.rows.start

    def split(self, micro_batch: int) -> list["SamplePlan"]:
        """The batch as plans of at most micro_batch samples each."""
        return [SamplePlan(self.batch, self.image_tokens, self.text_tokens, self.seed, i,
                           min(i + micro_batch, self.batch))
                for i in range(0, self.batch, max(1, micro_batch))]

    def randn(self, *shape: int) -> torch.Tensor:
        """Gaussian values of shape (samples, *shape), drawn for the whole batch."""
        return torch.randn(self.batch, *shape, generator=self.generator)[self.rows]

    def timesteps(self) -> torch.Tensor:
        """Flow-matching times in [0, 1] (0 = clean latent, 1 = pure noise)."""
        if self.batch == 1:
            return torch.tensor([0.5])
        return torch.linspace(0.0, 1.0, self.batch)[self.rows]

    def text_rms(self) -> torch.Tensor:
        if self.batch == 1:
            return torch.tensor([1.0])
        lo, hi = math.log(TEXT_RMS_LO), math.log(TEXT_RMS_HI)
        return torch.exp(torch.linspace(hi, lo, self.batch))[self.rows]

    def guidance(self) -> torch.Tensor:
        if self.batch == 1:
            return torch.tensor([3.5])
        return torch.linspace(GUIDANCE_LO, GUIDANCE_HI, self.batch)[self.rows]

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return (1 - t).reshape(shape) * x0 + t.reshape(shape) * noise

    def text(self, width: int, tokens: int | None = None) -> torch.Tensor:
        return self.randn(tokens or self.text_tokens, width) * self.text_rms().reshape(-1, 1, 1)

    def pooled(self, width: int) -> torch.Tensor:
        return self.randn(width) * self.text_rms().reshape(-1, 1)


def grid(tokens: int) -> tuple[int, int]:
    """A near-square h x w grid of at most `tokens` (at least 1 x 1)."""
    h = max(1, int(math.isqrt(max(tokens, 1))))
    return h, max(1, tokens // h)


def image_ids(h: int, w: int) -> torch.Tensor:
    """Flux's positions of packed latent tokens: (0, row, column)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def noised_latents(plan: SamplePlan, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean latents of `shape` per sample noised to the sampling times [batch, *shape], the times t)."""
    x0, noise = plan.randn(*shape), plan.randn(*shape)
    t = plan.timesteps()
    return plan.noised(x0, noise, t), t


def packed_latents(channels: int, plan: SamplePlan) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(noised packed latents [batch, h*w, channels], the times t, h, w) for DiTs that take
    patch tokens (Flux, Flux.2, Chroma, Qwen-Image)."""
    h, w = grid(plan.image_tokens)
    latents, t = noised_latents(plan, h * w, channels)
    return latents, t, h, w
