"""Dynamic binarization of [0, 1] intensities (as in the binarized-MNIST likelihood literature).

Each value v becomes 1 with probability v and 0 otherwise, independently. Training draws afresh at every step (the
model's ``binarize`` option, on the device); evaluation uses one draw made here with a fixed seed, so every model is
scored on the same binary test images. That draw is made a block of rows at a time, when the rows are read
(:class:`BinarizedRows`), so a split of any size is never binarized whole.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aekit.data.dataset import Dataset, as_float32
from aekit.errors import DataError

EVALUATION_SEED = 0


class BinarizedRows:
    """The rows of ``x`` (an array, memory-mapped or not, or anything sliced by rows) binarized by one seeded draw,
    drawn when read: float32 zeros and ones, element i of the rows taken as a whole 1 with probability x_i (uint8 x:
    x / 255) where the i-th float32 of ``numpy.random.default_rng(seed)`` falls below it. A block of rows starts the
    generator at its first element (PCG64 gives two float32 draws a step, so it is advanced by half the elements
    before the block, and one draw is dropped where that number is odd): every block gets the values the whole draw
    gives it. Sliced by a slice or an index array (runs of consecutive rows drawn as one block), a numpy array;
    ``numpy.asarray`` draws them all."""

    def __init__(self, x, seed: int):
        self.x, self.seed = x, seed
        self.dtype, self.shape, self.ndim = np.dtype(np.float32), tuple(x.shape), len(x.shape)
        self.features = int(np.prod(self.shape[1:], dtype=np.int64))
        self.size = len(x) * self.features
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._block(start, max(start, stop))
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.ndim == 0:
            row = range(len(self))[int(rows)]
            return self._block(row, row + 1)[0]
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(ordered) != 1) + 1):
            if len(run):
                out[order[run]] = self._block(int(ordered[run[0]]), int(ordered[run[-1]]) + 1)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def _block(self, start: int, stop: int) -> np.ndarray:
        values = as_float32(self.x[start:stop])
        if values.size and (values.min() < 0 or values.max() > 1):
            raise DataError(
                f"binarization needs intensities in [0, 1] but the data spans [{values.min():g}, {values.max():g}]; "
                "rescale it or drop --binarize"
            )
        generator = np.random.default_rng(self.seed)
        before = start * self.features
        generator.bit_generator.advance(before // 2)
        if before % 2:
            generator.random(1, dtype=np.float32)
        return (generator.random(values.shape, dtype=np.float32) < values).astype(np.float32)


def binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """One seeded Bernoulli draw per element: float32 zeros and ones, 1 with probability x (uint8 x: x / 255)."""
    return BinarizedRows(x, seed)[:]


def binarized(dataset: Dataset, seed: int = EVALUATION_SEED) -> Dataset:
    """``dataset`` with both splits binarized by one seeded draw (the training split first, then the test split), as
    :class:`BinarizedRows`: drawn a block at a time where they are read."""
    rng = np.random.default_rng(seed)
    x_train, x_test = (BinarizedRows(x, int(rng.integers(2**63))) for x in (dataset.x_train, dataset.x_test))
    return dataclasses.replace(
        dataset, name=f"{dataset.name} (binarized, seed {seed})", x_train=x_train, x_test=x_test, checked=True
    )
