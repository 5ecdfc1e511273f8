"""Per-feature standardization inside a model: the data's own units outside, comparable scales inside.

A real-valued table whose columns differ by orders of magnitude trains badly on the raw sum of squared differences
(the largest column is all the loss sees). A model built with ``standardize`` therefore works on
z = (x - center) / scale, each feature's mean and standard deviation over the training split, and hands results
back in the data's units (x = z * scale + center). Its loss is the squared error of the standardized values, i.e.
a Gaussian likelihood with each feature's variance proportional to its own: -log p(x|m) = sum ((x - m) / scale)^2 up
to a constant. The statistics are buffers, so they travel with the weights (model.safetensors) and every path through
a loaded model (evaluation, the apps, the Python API) applies the same scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from aekit.data.dataset import chunks

# Rows per chunk when the statistics are computed: bounded memory for any dataset size.
_CHUNK = 8192


class Standardize(nn.Module):
    """z = (x - center) / scale per feature; disabled (``shape=None``), the identity with no buffers.

    ``fit`` sets center and scale to each feature's mean and standard deviation (1 where a feature is constant).
    """

    def __init__(self, shape: tuple[int, ...] | None = None):
        super().__init__()
        self.enabled = shape is not None
        if self.enabled:
            self.register_buffer("center", torch.zeros(shape))
            self.register_buffer("scale", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale if self.enabled else x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.center if self.enabled else z

    def log_scale_sum(self) -> float | torch.Tensor:
        """sum log(scale): what a log-density in standardized units loses to become one in the data's units."""
        return self.scale.log().sum() if self.enabled else 0.0

    @torch.no_grad()
    def fit(self, x: np.ndarray) -> Standardize:
        """Each feature's mean and standard deviation over the rows of ``x`` (float64, in chunks; uint8 rows as
        intensities, / 255)."""
        if not self.enabled:
            return self
        total = np.zeros(self.center.shape, np.float64)
        for block in chunks(x, _CHUNK):
            total += block.sum(0, dtype=np.float64)
        mean = total / len(x)
        squares = np.zeros_like(mean)
        for block in chunks(x, _CHUNK):
            squares += ((block.astype(np.float64) - mean) ** 2).sum(0)
        std = np.sqrt(squares / len(x))
        # A constant feature keeps its values (scale 1), as scikit-learn's StandardScaler does.
        std[~(std > 1e-12 * np.maximum(np.abs(mean), 1.0))] = 1.0
        self.center.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.scale.copy_(torch.from_numpy(std.astype(np.float32)))
        return self

    def extra_repr(self) -> str:
        return f"features={math.prod(self.center.shape)}" if self.enabled else "disabled"
