"""The deterministic auto-encoders: plain, denoising and dropout."""
from __future__ import annotations

import torch

from aekit.errors import AekitError
from aekit.models.base import AutoEncoder, Loss

NOISE_KINDS = ("gaussian", "masking", "salt-and-pepper")


def corrupt(x: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """Corrupt a batch on its own device.

    gaussian: x + level * eps; masking: each element set to 0 with probability level; salt-and-pepper: each element
    set, with probability level, to the batch minimum or maximum with equal chance.
    """
    if kind == "gaussian":
        return x + level * torch.randn_like(x)
    hit = torch.rand_like(x) < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    if kind == "salt-and-pepper":
        salt = torch.rand_like(x) < 0.5
        return torch.where(hit, torch.where(salt, x.max(), x.min()), x)
    raise AekitError(f"unknown noise {kind!r}; use one of {', '.join(NOISE_KINDS)}")


class DenoisingAE(AutoEncoder):
    """Denoising auto-encoder: loss = -log p(x | decoder(encoder(corrupt(x)))), the clean x as the target."""

    def __init__(self, encoder, decoder, likelihood, noise: str = "gaussian", noise_level: float = 0.3):
        super().__init__(encoder, decoder, likelihood)
        if noise not in NOISE_KINDS:
            raise AekitError(f"unknown noise {noise!r}; use one of {', '.join(NOISE_KINDS)}")
        self.noise, self.noise_level = noise, noise_level

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return corrupt(x, self.noise, self.noise_level)

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        x_in = self.corrupt(x) if self.training else x
        rec = self.reconstruction_nll(x_in, x).mean()
        return Loss(rec, {"reconstruction": rec})


class DropoutAE(AutoEncoder):
    """Dropout auto-encoder: loss = -log p(x | decoder(encoder(x))) with dropout on the input and hidden layers.

    The dropout layers live in its networks, so ``train()`` turns them on and ``eval()`` off.
    """
