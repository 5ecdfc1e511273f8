"""PCA beside the auto-encoders, with the same encode/decode/loss interface."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from aekit.errors import DataError
from aekit.models.base import Loss, accepts_numpy
from aekit.models.likelihood import Gaussian


class PCA(nn.Module):
    """Principal component analysis, fitted in closed form by scikit-learn: code = W (x - m), reconstruction
    = W^T code + m, with W the top ``code_dim`` principal directions; loss = sum of squared differences.

    It is linear and keeps the directions of largest variance, which is what the auto-encoders are compared against.
    """

    closed_form = True
    likelihood = Gaussian
    upscale_factor = None

    def __init__(self, shape: tuple[int, ...], code_dim: int):
        super().__init__()
        self.shape, self.code_dim = tuple(shape), code_dim
        features = math.prod(self.shape)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("components", torch.zeros(code_dim, features))

    def fit(self, x: np.ndarray) -> "PCA":
        from sklearn.decomposition import PCA as SklearnPCA

        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if self.code_dim > min(flat.shape):
            raise DataError(f"PCA cannot keep {self.code_dim} components of {flat.shape[0]} examples with "
                            f"{flat.shape[1]} features; use a code size of at most {min(flat.shape)}")
        fitted = SklearnPCA(n_components=self.code_dim, svd_solver="full").fit(flat)
        self.mean.copy_(torch.from_numpy(fitted.mean_.astype(np.float32)))
        self.components.copy_(torch.from_numpy(fitted.components_.astype(np.float32)))
        return self

    @accepts_numpy
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T

    @accepts_numpy
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.components + self.mean).unflatten(1, self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @accepts_numpy
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def loss(self, x: torch.Tensor) -> Loss:
        sse = Gaussian.nll(self.forward(x), x).mean()
        return Loss(sse, {"reconstruction": sse})
