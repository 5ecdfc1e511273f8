"""The in-memory dataset every source produces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aekit.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Train and test examples as float32 arrays of shape (n, *shape).

    Images are (n, channels, height, width) with intensities in [0, 1]; tabular data is (n, features).
    ``binary`` says the values are [0, 1] intensities (Bernoulli likelihood) rather than real values (Gaussian).
    Labels are int64 arrays, or None where the source has none.
    """

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    binary: bool

    def __post_init__(self):
        for split, x in (("train", self.x_train), ("test", self.x_test)):
            if x.dtype != np.float32:
                raise TypeError(f"{split} examples must be float32, got {x.dtype}")
            if len(x) == 0:
                raise DataError(f"{self.name}: the {split} split is empty; provide more examples")
            if not np.isfinite(x).all():
                raise DataError(f"{self.name}: the {split} split holds NaN or infinite values; "
                                "clean or impute them first")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{self.name}: train examples have shape {self.x_train.shape[1:]} but test examples "
                            f"{self.x_test.shape[1:]}")
        if self.binary and (self.x_train.min() < 0 or self.x_train.max() > 1):
            raise DataError(f"{self.name}: marked binary-valued but holds values outside [0, 1]")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


def split_seeded(x: np.ndarray, y: np.ndarray | None, *, seed: int, test_fraction: float):
    """A reproducible random train/test split: (x_train, x_test, y_train, y_test)."""
    n = len(x)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise DataError(f"{n} examples cannot be split into non-empty train and test sets with test fraction "
                        f"{test_fraction}; provide more examples")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    if y is None:
        return x[train], x[test], None, None
    return x[train], x[test], y[train], y[test]
