"""The variational auto-encoder (Kingma & Welling 2014), with the importance-weighted bound of Burda et al. (2015)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Normal

from aekit.errors import AekitError
from aekit.models.base import AutoEncoder, Loss, device_of, takes_examples
from aekit.models.config import NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
from aekit.naming import option as named

OBJECTIVES = ("elbo", "iwae")


def gaussian_kl(
    mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor | float = 0.0, logvar2: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)) for diagonal Gaussians, summed over the last dimension.

    Per dimension: log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2; the defaults give KL to N(0, I).
    """
    # Numbers stay numbers: made tensors, they would be copied to the device on every call (which a CUDA graph
    # cannot capture).
    var2 = logvar2.exp() if torch.is_tensor(logvar2) else math.exp(logvar2)
    per_dim = 0.5 * (logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2).pow(2)) / (2 * var2) - 0.5
    return per_dim.sum(-1)


def log_importance_weights(
    model, x: torch.Tensor, samples: int, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for z_1..z_samples drawn from q(z|x); shape (samples, n).

    z_s = mu + sigma * eps_s (reparameterized, so gradients flow through the weights), p(z) = N(0, I), and
    log p(x|z) is the likelihood's proper log-density (``log_prob``). Since E_q[w] = p(x), log mean_s w_s is a
    lower bound on log p(x) that tightens as ``samples`` grows, and mean_s log w_s estimates the ELBO. ``model``
    needs ``posterior(x) -> (mu, logvar)``, ``decoder`` and ``likelihood``; all samples of all examples go through
    the decoder in one call. ``eps`` (samples, 1 or n, code_dim), where given, is the standard normal draw to use.
    """
    mu, logvar = model.posterior(x)
    # No argument checks: they would synchronise with the device (and break a compiled training step).
    q = Normal(mu, (0.5 * logvar).exp(), validate_args=False)
    if eps is None:
        eps = torch.randn((samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + q.scale * eps
    log_q = q.log_prob(z).sum(-1)
    log_prior = Normal(torch.zeros_like(mu), torch.ones_like(mu), validate_args=False).log_prob(z).sum(-1)
    log_likelihood = model.likelihood.log_prob(model.decoder(z.flatten(0, 1)).unflatten(0, (samples, len(x))), x)
    return log_likelihood + log_prior - log_q


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum_i exp(values_i) along ``dim`` (k its length), computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


class VAE(AutoEncoder):
    """Variational auto-encoder: q(z|x) = N(mu(x), diag(exp(logvar(x)))), p(z) = N(0, I), and one of two losses.

    elbo: loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)), one sample z = mu + sigma * eps per example
          (reparameterization), the KL in closed form; with beta = 1 it is the negative ELBO.
    iwae: loss = -E[log (1/k) sum_s w_s], w_s = p(x|z_s) p(z_s) / q(z_s|x), z_1..z_k drawn from q(z|x),
          k = ``iw_samples`` (Burda et al. 2015): a bound on log p(x) at least as tight as the ELBO (k = 1 is the
          ELBO) that tightens with k; its gradient weighs each sample by its normalised weight w_s / sum w.
    The encoder outputs 2 * code_dim values: the mean, then the log-variance.
    """

    variational = True

    def __init__(
        self,
        encoder,
        decoder,
        likelihood,
        code_dim: int,
        beta: float = 1.0,
        objective: str = "elbo",
        iw_samples: int = 50,
        **settings,
    ):
        super().__init__(encoder, decoder, likelihood, **{**settings, "code_dim": code_dim})
        if objective not in OBJECTIVES:
            raise AekitError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
        self.beta, self.objective, self.iw_samples = beta, objective, iw_samples

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x)."""
        return self.encoder(x).chunk(2, dim=-1)

    @takes_examples
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the code used for reconstruction, probes and plots."""
        return self.posterior(self.standardize(x))[0]

    def elbo_terms(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: -log p(x|z) for one z ~ q(z|x), and KL(q(z|x) || N(0, I)); their sum is the negative ELBO."""
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * (0.5 * logvar).exp()
        return self.likelihood.nll(self.decoder(z), x), gaussian_kl(mu, logvar)

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        if self.objective == "iwae":
            neg_bound = -log_mean_exp(log_importance_weights(self, x, self.iw_samples)).mean()
            return Loss(neg_bound, {"neg_iwae_bound": neg_bound})
        rec, kl = (term.mean() for term in self.elbo_terms(x))
        return Loss(rec + self.beta * kl, {"reconstruction": rec, "kl": kl})

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior N(0, I)."""
        z = torch.randn(n, self.code_dim, generator=generator, device=device_of(self))
        return self.decode(z)


@register
@dataclass(frozen=True)
class VAEConfig(NetConfig):
    """The variational auto-encoder: the weight of its KL term and its objective."""

    family = "vae"
    label = "VAE"
    model_class = VAE

    beta: float = option(1.0, "weight of the KL term")
    objective: str = option(
        "elbo", "elbo, or iwae (the importance-weighted bound of Burda et al. 2015)", choices=OBJECTIVES
    )
    iw_samples: int = option(50, "with --objective iwae: importance samples per example")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.beta >= 0:  # also refuses NaN
            problems.append(f"{named('beta', self.beta)} must be >= 0")
        if self.objective not in OBJECTIVES:
            problems.append(f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}")
        elif self.objective == "iwae" and self.beta != 1:
            problems.append(
                f"{named('beta', self.beta)} weighs the KL term of the elbo objective and the iwae bound has "
                f"none; leave it at 1 or use {named('objective', 'elbo')}"
            )
        if self.iw_samples < 1:
            problems.append(f"{named('iw_samples', self.iw_samples)} must be at least 1")
        return problems

    def build(self) -> VAE:
        settings = {k: v for k, v in self.model_settings().items() if k != "code_dim"}
        return VAE(
            *self.networks(2 * self.code_dim),
            LIKELIHOODS[self.likelihood],
            self.code_dim,
            self.beta,
            self.objective,
            self.iw_samples,
            **settings,
        )
