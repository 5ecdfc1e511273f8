"""Observation models p(x | decoder output), shared by every auto-encoder.

Binary-valued data ([0, 1] intensities) uses a Bernoulli with a sigmoid output, so the reconstruction loss is the
cross-entropy; real-valued data uses a Gaussian with a linear output, so the loss is the sum of squared differences.
Both return the loss per example, summed over its elements (``nll``). ``log_prob`` is the proper log-density or
log-mass, normalising constant included, for what needs true likelihoods (the importance-weighted estimate of
log p(x)): for the Bernoulli it is exactly -nll; for the Gaussian, whose nll drops a constant, it adds it back.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aekit.errors import DataError


class Bernoulli:
    """-log p(x|l) = -sum x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)), the binary cross-entropy in nats."""

    name = "bernoulli"

    @staticmethod
    def mean(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    @staticmethod
    def nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    @staticmethod
    def log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|l) per example: exactly -nll (a log-mass for binary x)."""
        return -Bernoulli.nll(logits, x)


class Gaussian:
    """-log p(x|m) = sum (x - m)^2, a Gaussian of variance 1/2 up to an additive constant."""

    name = "gaussian"

    @staticmethod
    def mean(output: torch.Tensor) -> torch.Tensor:
        return output

    @staticmethod
    def nll(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (output - x).pow(2).flatten(1).sum(1)

    @staticmethod
    def log_prob(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log N(x; m, I/2) per example = -sum (x - m)^2 - (D/2) log(pi), D the number of elements."""
        return -Gaussian.nll(output, x) - 0.5 * math.prod(x.shape[1:]) * math.log(math.pi)


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
LOSS_TO_LIKELIHOOD = {"bce": "bernoulli", "mse": "gaussian"}


def choose_likelihood(loss: str, binary: bool, x_min: float, x_max: float) -> str:
    """The likelihood name for ``--loss auto|bce|mse``: auto picks Bernoulli for binary-valued data."""
    if loss == "auto":
        return "bernoulli" if binary else "gaussian"
    if loss not in LOSS_TO_LIKELIHOOD:
        raise DataError(f"unknown loss {loss!r}; use auto, bce or mse")
    if loss == "bce" and (x_min < 0.0 or x_max > 1.0):
        raise DataError(f"the cross-entropy loss needs values in [0, 1] but the data spans [{x_min:g}, {x_max:g}]; "
                        "use --loss mse or rescale the data")
    return LOSS_TO_LIKELIHOOD[loss]
