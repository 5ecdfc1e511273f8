"""The deterministic auto-encoders: plain, denoising and dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aekit.errors import AekitError
from aekit.models.base import AutoEncoder, Loss
from aekit.models.config import NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
from aekit.naming import option as named

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


def noise_option():
    """The corruption a denoising family learns to undo: one declaration for each family that has it."""
    return option("gaussian", "the corruption", choices=NOISE_KINDS)


def noise_level_option():
    """Its level: one declaration for each family that has it."""
    return option(
        0.3,
        "noise standard deviation (gaussian, on standardized values where the model standardizes; red: --sigma) or "
        "share of elements hit",
    )


def noise_problems(noise: str, noise_level: float) -> list[str]:
    """What is wrong with a corruption and its level."""
    problems = [] if noise in NOISE_KINDS else [f"unknown noise {noise!r}; use one of {', '.join(NOISE_KINDS)}"]
    if not noise_level >= 0 or (noise != "gaussian" and noise_level > 1):
        problems.append(f"{named('noise_level', noise_level)} must be >= 0 (and <= 1 for {noise})")
    return problems


class DenoisingAE(AutoEncoder):
    """Denoising auto-encoder: loss = -log p(x | decoder(encoder(corrupt(x)))), the clean x as the target."""

    def __init__(self, encoder, decoder, likelihood, noise: str = "gaussian", noise_level: float = 0.3, **settings):
        super().__init__(encoder, decoder, likelihood, **settings)
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


@register
@dataclass(frozen=True)
class AEConfig(NetConfig):
    """The plain auto-encoder: only the shared fields."""

    family = "ae"
    label = "AE"
    model_class = AutoEncoder

    def build(self) -> AutoEncoder:
        return AutoEncoder(*self.networks(), LIKELIHOODS[self.likelihood], **self.model_settings())


@register
@dataclass(frozen=True)
class DAEConfig(NetConfig):
    """The denoising auto-encoder: the corruption and its level."""

    family = "dae"
    label = "DAE"
    model_class = DenoisingAE

    noise: str = noise_option()
    noise_level: float = noise_level_option()

    def problems(self) -> list[str]:
        return super().problems() + noise_problems(self.noise, self.noise_level)

    def build(self) -> DenoisingAE:
        return DenoisingAE(
            *self.networks(), LIKELIHOODS[self.likelihood], self.noise, self.noise_level, **self.model_settings()
        )


@register
@dataclass(frozen=True)
class DropoutAEConfig(NetConfig):
    """The dropout auto-encoder: the dropout rates of its hidden layers and of its input."""

    family = "dropout-ae"
    label = "Dropout-AE"
    model_class = DropoutAE

    dropout: float = option(0.2, "dropout rate of the hidden layers")
    input_dropout: float = option(0.1, "dropout rate of the input")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1):
            problems.append(
                f"{named('dropout', self.dropout)} and {named('input_dropout', self.input_dropout)} must be in [0, 1)"
            )
        return problems

    def build(self) -> DropoutAE:
        networks = self.networks(dropout=self.dropout, input_dropout=self.input_dropout)
        return DropoutAE(*networks, LIKELIHOODS[self.likelihood], **self.model_settings())
