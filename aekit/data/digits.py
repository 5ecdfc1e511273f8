"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, no network needed."""

from __future__ import annotations

import numpy as np

from aekit.data.dataset import Dataset, split_seeded


def load_digits(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """1,797 digits as (1, 8, 8) intensities in [0, 1] (the 0..16 counts divided by 16), seeded split."""
    x, y = read_digits()
    x_train, x_test, y_train, y_test = split_seeded(x, y, seed=seed, test_fraction=test_fraction)
    return Dataset("digits", x_train, x_test, y_train, y_test, binary=True)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as float32 (1797, 1, 8, 8) in [0, 1] and their int64 labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return (bunch.images / 16.0).astype(np.float32)[:, None, :, :], bunch.target.astype(np.int64)
