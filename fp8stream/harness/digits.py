"""The tiny DiTs' data: scikit-learn's 8x8 digits in [-1, 1] packed 2x2 into 16 tokens of 4
values (Flux's latent packing), and a learned per-class "prompt" standing in for text encoders."""

from __future__ import annotations

import torch
import torch.nn as nn

TXT_TOKENS = 4  # length of the learned "prompt" of each digit class
NUM_CLASSES = 10


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


class ClassConditioning(nn.Module):
    """A learned stand-in for the text encoders: a digit label -> T5-like tokens and a CLIP-like pooled vector."""

    def __init__(self, joint_dim: int, pooled_dim: int, tokens: int = TXT_TOKENS, classes: int = NUM_CLASSES):
        super().__init__()
        self.txt = nn.Parameter(torch.randn(classes, tokens, joint_dim))
        self.pooled = nn.Parameter(torch.randn(classes, pooled_dim))

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.txt[labels], self.pooled[labels]


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
