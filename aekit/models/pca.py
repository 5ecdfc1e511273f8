"""PCA beside the auto-encoders, with the same encode/decode/loss interface."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aekit.data.dataset import CHUNK_ROWS, as_float32
from aekit.errors import DataError
from aekit.models.base import Loss, rows_tensor, takes_codes, takes_examples
from aekit.models.config import ModelConfig, register
from aekit.models.likelihood import Gaussian
from aekit.models.standardize import Standardize
from aekit.naming import option as named


class PCA(nn.Module):
    """Principal component analysis, fitted in closed form by scikit-learn: code = W (x - m), reconstruction
    = W^T code + m, with W the top ``code_dim`` principal directions; loss = sum of squared differences. With
    ``standardize`` enabled (set by ``build_model`` for real-valued data) x is each feature's standardized value, as
    for the auto-encoders. It has no networks, so it has no options beyond the code size.

    It is linear and keeps the directions of largest variance, which is what the auto-encoders are compared against.
    """

    closed_form = True
    likelihood = Gaussian
    upscale_factor = None
    binarize = False
    config = None
    codebook_size = None
    entropy_model = None
    code_storage = "quantized"
    takes_any_size = False
    variational = False
    noise = None
    gives_codes = True
    factors = ()

    def __init__(self, shape: tuple[int, ...], code_dim: int):
        super().__init__()
        self.shape, self.code_dim = tuple(shape), code_dim
        self.code_shape = (code_dim,)
        self.example_shape = self.shape
        self.standardize = Standardize()
        features = math.prod(self.shape)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("components", torch.zeros(code_dim, features))

    def fit(self, x: np.ndarray) -> PCA:
        from sklearn.decomposition import PCA as SklearnPCA

        # One float32 copy of the examples, filled a block at a time (a store's map is read-only: each block is copied
        # before PyTorch sees it), that scikit-learn then centres in place.
        flat = np.empty((len(x), math.prod(self.shape)), np.float32)
        if self.code_dim > min(flat.shape):
            raise DataError(
                f"PCA cannot keep {self.code_dim} components of {flat.shape[0]} examples with "
                f"{flat.shape[1]} features; set {named('code_dim')} to at most {min(flat.shape)}"
            )
        with torch.no_grad():
            for start in range(0, len(x), CHUNK_ROWS):
                block = rows_tensor(as_float32(x[start : start + CHUNK_ROWS]))
                flat[start : start + len(block)] = self.standardize(block).flatten(1).numpy()
        fitted = SklearnPCA(n_components=self.code_dim, svd_solver="full", copy=False).fit(flat)
        self.mean.copy_(torch.from_numpy(fitted.mean_.astype(np.float32)))
        self.components.copy_(torch.from_numpy(fitted.components_.astype(np.float32)))
        return self

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The code of already standardized examples."""
        return (x.flatten(1) - self.mean) @ self.components.T

    def unproject(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction, in standardized units, of a code."""
        return (z @ self.components + self.mean).unflatten(1, self.shape)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean for each code in standardized units (see :meth:`AutoEncoder.decoder_output`)."""
        return self.unproject(z)

    @takes_examples
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.standardize(x))

    @takes_codes
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.standardize.inverse(self.unproject(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @takes_examples
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.standardize(x)
        sse = Gaussian.nll(self.unproject(self.project(x)), x).mean()
        return Loss(sse, {"reconstruction": sse})


@register
@dataclass(frozen=True)
class PCAConfig(ModelConfig):
    """PCA: only the code size (the number of components)."""

    family = "pca"
    label = "PCA"
    model_class = PCA

    def problems(self) -> list[str]:
        values = math.prod(self.shape)
        if self.code_dim > values:
            return [
                f"PCA cannot keep {self.code_dim} components of {values} features; set {named('code_dim')} to at "
                f"most {values}"
            ]
        return super().problems()

    def build(self) -> PCA:
        return PCA(self.shape, self.code_dim)
