"""The variational auto-encoder (Kingma & Welling 2014)."""
from __future__ import annotations

import torch

from aekit.models.base import AutoEncoder, Loss, accepts_numpy, device_of


def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor | float = 0.0,
                logvar2: torch.Tensor | float = 0.0) -> torch.Tensor:
    """KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)) for diagonal Gaussians, summed over the last dimension.

    Per dimension: log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2; the defaults give KL to N(0, I).
    """
    mu2 = torch.as_tensor(mu2, dtype=mu1.dtype, device=mu1.device)
    logvar2 = torch.as_tensor(logvar2, dtype=mu1.dtype, device=mu1.device)
    per_dim = 0.5 * (logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2).pow(2)) / (2 * logvar2.exp()) - 0.5
    return per_dim.sum(-1)


class VAE(AutoEncoder):
    """Variational auto-encoder: loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)).

    q(z|x) = N(mu(x), diag(exp(logvar(x)))), one sample z = mu + sigma * eps per example (reparameterization).
    The encoder outputs 2 * code_dim values: the mean, then the log-variance.
    """

    def __init__(self, encoder, decoder, likelihood, code_dim: int, beta: float = 1.0):
        super().__init__(encoder, decoder, likelihood)
        self.code_dim, self.beta = code_dim, beta

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x)."""
        return self.encoder(x).chunk(2, dim=-1)

    @accepts_numpy
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the code used for reconstruction, probes and plots."""
        return self.posterior(x)[0]

    def loss(self, x: torch.Tensor) -> Loss:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = self.likelihood.nll(self.decoder(z), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return Loss(rec + self.beta * kl, {"reconstruction": rec, "kl": kl})

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior N(0, I)."""
        z = torch.randn(n, self.code_dim, generator=generator, device=device_of(self))
        return self.decode(z)
