"""Observation models p(x | decoder output), shared by every auto-encoder.

Binary-valued data ([0, 1] intensities) uses a Bernoulli with a sigmoid output, so the reconstruction loss is the
cross-entropy; real-valued data uses a Gaussian with a linear output, so the loss is the sum of squared differences.
Both return the loss per example, summed over its elements (``nll``). ``log_prob`` is the proper log-density or
log-mass, normalising constant included, for what needs true likelihoods (the importance-weighted estimate of
log p(x)): for the Bernoulli it is exactly -nll; for the Gaussian, whose nll drops a constant, it adds it back.
``log_prob`` also takes decoder outputs with leading sample dimensions, (samples, n, *shape) for x of shape
(n, *shape), over which x broadcasts without being copied once per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aekit.errors import DataError
from aekit.naming import option as named


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
        # binary_cross_entropy_with_logits' own arithmetic, (1 - x) l - log sigmoid(l), negated; written out because
        # that function wants x at the logits' size, i.e. copied once per importance sample. In place: no backward
        # reads log sigmoid's output.
        return _per_example(F.logsigmoid(logits).sub_((1 - x) * logits), x)


class Gaussian:
    """-log p(x|m) = sum (x - m)^2, a Gaussian of variance 1/2 up to an additive constant."""

    name = "gaussian"

    @staticmethod
    def mean(output: torch.Tensor) -> torch.Tensor:
        return output

    @staticmethod
    def nll(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _per_example((output - x).pow(2), x)

    @staticmethod
    def log_prob(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log N(x; m, I/2) per example = -sum (x - m)^2 - (D/2) log(pi), D the number of elements."""
        return -Gaussian.nll(output, x) - 0.5 * math.prod(x.shape[1:]) * math.log(math.pi)


def _per_example(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``values`` of shape (..., n, *shape), from x of shape (n, *shape), summed over each example's elements."""
    return values.flatten(values.dim() - x.dim() + 1).sum(-1)


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
LOSS_TO_LIKELIHOOD = {"bce": "bernoulli", "mse": "gaussian"}


def choose_likelihood(loss: str, binary: bool, x_min: float, x_max: float) -> str:
    """The likelihood name for ``--loss auto|bce|mse``: auto picks Bernoulli for binary-valued data."""
    if loss == "auto":
        return "bernoulli" if binary else "gaussian"
    if loss not in LOSS_TO_LIKELIHOOD:
        raise DataError(f"unknown loss {loss!r}; use auto, bce or mse")
    if loss == "bce" and (x_min < 0.0 or x_max > 1.0):
        raise DataError(
            f"the cross-entropy loss needs values in [0, 1] but the data spans [{x_min:g}, {x_max:g}]; "
            f"use {named('loss', 'mse')} or rescale the data"
        )
    return LOSS_TO_LIKELIHOOD[loss]
