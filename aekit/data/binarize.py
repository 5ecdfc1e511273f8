"""Dynamic binarization of [0, 1] intensities (as in the binarized-MNIST likelihood literature).

Each value v becomes 1 with probability v and 0 otherwise, independently. Training draws afresh at every step (the
model's ``binarize`` option, on the device); evaluation uses one draw made here with a fixed seed, so every model is
scored on the same binary test images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aekit.data.dataset import Dataset, as_float32
from aekit.errors import DataError

EVALUATION_SEED = 0


def binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """One seeded Bernoulli draw per element: float32 zeros and ones, 1 with probability x (uint8 x: x / 255)."""
    x = as_float32(x)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"binarization needs intensities in [0, 1] but the data spans [{x.min():g}, {x.max():g}]; "
            "rescale it or drop --binarize"
        )
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def binarized(dataset: Dataset, seed: int = EVALUATION_SEED) -> Dataset:
    """``dataset`` with both splits binarized by one seeded draw (the training split first, then the test split)."""
    rng = np.random.default_rng(seed)
    x_train, x_test = (binarize(x, int(rng.integers(2**63))) for x in (dataset.x_train, dataset.x_test))
    return dataclasses.replace(dataset, name=f"{dataset.name} (binarized, seed {seed})", x_train=x_train, x_test=x_test)
