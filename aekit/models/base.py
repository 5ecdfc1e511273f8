"""What every model shares: the loss record, training phases, and numpy-friendly encode/decode."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn


class Loss(NamedTuple):
    """A scalar to minimise and its named parts (batch means), for logging."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


@dataclass
class Phase:
    """One optimizer step of a training iteration: which parameters it updates and the loss it minimises."""

    name: str
    parameters: list[nn.Parameter]
    loss: Callable[[torch.Tensor], Loss]


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters (or, for PCA, its buffers) live."""
    tensor = next(iter(module.parameters()), None)
    return (tensor if tensor is not None else next(iter(module.buffers()))).device


def accepts_numpy(method):
    """Let a tensor method take numpy arrays too: numpy in, numpy out, computed without gradients."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return method(self, x, *args, **kwargs)
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device_of(self))
            out = method(self, x, *args, **kwargs)
        return out.cpu().numpy()

    return wrapper


class AutoEncoder(nn.Module):
    """Auto-encoder: loss = -log p(x | decoder(encoder(x))), cross-entropy or sum of squared differences.

    ``binarize`` (set by ``build_model`` from ``ModelSpec.binarize``) turns on dynamic binarization: while training,
    every loss sees a fresh draw x_b ~ Bernoulli(x) of the [0, 1] intensities instead of x. ``upscale_factor``
    (set by ``build_model`` for the upscale task) says the encoder first averages f x f pixel blocks: the loss is
    then -log p(x | decoder(encoder(downsample(x)))), a super-resolution model.
    """

    binarize = False
    upscale_factor: int | None = None
    code_dim: int | None = None  # set by build_model

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the loss sees it: a fresh binary draw per step with ``binarize`` on while training, else x."""
        return torch.bernoulli(x) if self.binarize and self.training else x

    @accepts_numpy
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each example."""
        return self.encoder(x)

    @accepts_numpy
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean for each code: sigmoid output for Bernoulli, linear for Gaussian."""
        return self.likelihood.mean(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @accepts_numpy
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def reconstruction_nll(self, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(target | decoder(encoder(x_in))) per example."""
        return self.likelihood.nll(self.decoder(self.encoder(x_in)), target)

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        rec = self.reconstruction_nll(x, x).mean()
        return Loss(rec, {"reconstruction": rec})

    def phases(self) -> list[Phase]:
        """The optimizer steps of one training iteration; a plain auto-encoder has one."""
        return [Phase("model", list(self.parameters()), self.loss)]
