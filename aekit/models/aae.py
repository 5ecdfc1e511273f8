"""The adversarial auto-encoder (Makhzani et al. 2015)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit.errors import AekitError
from aekit.models import nets
from aekit.models.base import AutoEncoder, Loss, Phase, device_of
from aekit.models.config import NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
from aekit.naming import option as named

PRIORS = ("gaussian", "mixture", "uniform")


def sample_prior(kind: str, n: int, dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws from the code prior.

    gaussian: N(0, I). uniform: U(-1, 1) per dimension. mixture: 10 Gaussians of standard deviation 0.5 whose means
    sit evenly on a circle of radius 2 in the first two dimensions (on a line for a 1-D code), zero elsewhere.
    """
    if kind == "gaussian":
        return torch.randn(n, dim, device=device, generator=generator)
    if kind == "uniform":
        return torch.rand(n, dim, device=device, generator=generator) * 2 - 1
    if kind == "mixture":
        component = torch.randint(0, 10, (n,), device=device, generator=generator)
        angle = component.float() * (2 * math.pi / 10)
        means = torch.zeros(n, dim, device=device)
        if dim == 1:
            means[:, 0] = (component.float() - 4.5) * (4.0 / 9)
        else:
            means[:, 0], means[:, 1] = 2 * angle.cos(), 2 * angle.sin()
        return means + 0.5 * torch.randn(n, dim, device=device, generator=generator)
    raise AekitError(f"unknown prior {kind!r}; use one of {', '.join(PRIORS)}")


class AdversarialAE(AutoEncoder):
    """Adversarial auto-encoder: each batch minimises, in turn,
    reconstruction: -log p(x | decoder(encoder(x)))                      over encoder and decoder;
    discriminator:  -log D(z_prior) - log(1 - D(encoder(x)))             over the discriminator D;
    generator:      -log D(encoder(x))                                   over the encoder,
    so the distribution of codes is pushed toward the prior.
    """

    def __init__(
        self,
        encoder,
        decoder,
        likelihood,
        discriminator: nn.Module,
        code_dim: int,
        prior: str = "gaussian",
        **settings,
    ):
        super().__init__(encoder, decoder, likelihood, **{**settings, "code_dim": code_dim})
        if prior not in PRIORS:
            raise AekitError(f"unknown prior {prior!r}; use one of {', '.join(PRIORS)}")
        self.discriminator, self.prior = discriminator, prior

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return sample_prior(self.prior, n, self.code_dim, device_of(self), generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior."""
        return self.decode(self.sample_prior(n, generator))

    def discriminator_loss(self, x: torch.Tensor) -> Loss:
        real = self.discriminator(self.sample_prior(len(x)))
        fake = self.discriminator(self.encoder(self.training_input(x)).detach())
        loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )
        return Loss(loss, {"discriminator": loss})

    def generator_loss(self, x: torch.Tensor) -> Loss:
        fake = self.discriminator(self.encoder(self.training_input(x)))
        loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return Loss(loss, {"generator": loss})

    def phases(self) -> list[Phase]:
        autoencoder = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return [
            Phase("reconstruction", autoencoder, self.loss),
            Phase("discriminator", list(self.discriminator.parameters()), self.discriminator_loss),
            Phase("generator", list(self.encoder.parameters()), self.generator_loss),
        ]


@register
@dataclass(frozen=True)
class AAEConfig(NetConfig):
    """The adversarial auto-encoder: the code prior and the discriminator's hidden widths."""

    family = "aae"
    label = "AAE"
    model_class = AdversarialAE

    prior: str = option("gaussian", "the code prior", choices=PRIORS)
    discriminator_hidden: tuple[int, ...] = option(
        (256, 256), "discriminator hidden widths, comma-separated", sklearn="discriminator_hidden_layer_sizes"
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.prior not in PRIORS:
            problems.append(f"unknown prior {self.prior!r}; use one of {', '.join(PRIORS)}")
        if any(h < 1 for h in self.discriminator_hidden):
            problems.append(
                f"every size of {named('discriminator_hidden', self.discriminator_hidden)} must be at least 1"
            )
        return problems

    def build(self) -> AdversarialAE:
        discriminator = nets.mlp(self.code_dim, self.discriminator_hidden, 1)
        settings = {k: v for k, v in self.model_settings().items() if k != "code_dim"}
        return AdversarialAE(
            *self.networks(), LIKELIHOODS[self.likelihood], discriminator, self.code_dim, self.prior, **settings
        )
