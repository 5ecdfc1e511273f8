"""The dataset every source produces: train and test arrays, kept in their stored type."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from aekit.errors import DataError

# Rows per chunk where a whole split is scanned: memory stays bounded whatever the dataset's size.
CHUNK_ROWS = 4096


def as_float32(x: np.ndarray) -> np.ndarray:
    """Examples as models take them: uint8 8-bit intensities divided by 255, float32 values as they are (no copy)."""
    if x.dtype == np.uint8:
        values = np.asarray(x).astype(np.float32)
        values /= 255
        return values
    return np.asarray(x, dtype=np.float32)


class IndexedRows:
    """The rows ``index`` of ``base`` (a memory-mapped array), in that order, read only when sliced: a seeded split
    of a file that is never copied whole. Slicing with a slice or an index array gives a numpy array (the rows read
    in increasing position, for locality); ``numpy.asarray`` reads them all."""

    def __init__(self, base: np.ndarray, index: np.ndarray):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.dtype, self.shape, self.ndim = base.dtype, (len(self.index), *base.shape[1:]), base.ndim
        self.size = len(self.index) * int(np.prod(self.shape[1:], dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        out[order] = self.base[rows[order]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def rows_of(x, index: np.ndarray):
    """The rows ``index`` of ``x``, in that order: an in-memory array's copied, those of anything else sliced by rows
    (a memory map, an :class:`IndexedRows`, rows drawn when read) as an :class:`IndexedRows` view, nothing read."""
    if isinstance(x, IndexedRows):
        return IndexedRows(x.base, x.index[index])
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        return x[index]
    return IndexedRows(x, index)


def sample_index(n: int, most: int, seed: int = 0) -> np.ndarray | None:
    """A seeded sample of ``most`` of n row indices, in increasing order; None (every row) where n <= most."""
    if n <= most:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def chunks(x: np.ndarray, rows: int = CHUNK_ROWS):
    """``x`` a block of rows at a time, as float32 (see :func:`as_float32`)."""
    for start in range(0, len(x), rows):
        yield as_float32(x[start : start + rows])


@dataclass(frozen=True)
class Dataset:
    """Train and test examples as arrays of shape (n, *shape), float32 values or uint8 8-bit intensities (divided by
    255 wherever they are used, a chunk at a time), either possibly memory-mapped (a store, :mod:`aekit.data.store`,
    or the :class:`IndexedRows` of an .npy file's split): consumers slice them, never copy them whole.

    Images are (n, channels, height, width) with intensities in [0, 1]; tabular data is (n, features).
    ``binary`` says the values are [0, 1] intensities (Bernoulli likelihood) rather than real values (Gaussian).
    Labels are int64 arrays, or None where the source has none; ``label_names`` names the classes by number where
    the source does (a folder's subfolders, a store), else None. ``bounds`` gives the training split's smallest and
    largest value (as models see them) where the source knows them (a store's manifest), sparing a scan; ``checked``
    says the values were already checked to be finite (and in [0, 1] where binary) when the store was packed;
    ``store_id`` is the id of the store they were opened from, else None, and ``digest`` a digest that identifies
    the examples, labels and split where the source knows one (a store's :func:`aekit.data.store.data_digest`; else
    :func:`aekit.data.identity.data_sha256` computes one). ``photos``, for patch training only
    (:mod:`aekit.data.photos`), are the training images whole, (channels, height, width) each of any size (views of
    the memory map, for a store), that the training crops its patches from; ``x_train[i]`` is the centre crop of
    ``photos[i]``. None for other data. ``anomaly_labels`` says the labels mark anomalies (1) and normal examples (0)
    rather than classes (a table's, see :func:`aekit.data.arrays.load_array_file`): they are never used to fit, only
    to measure the anomaly scores.
    """

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    binary: bool
    label_names: tuple[str, ...] | None = None
    bounds: tuple[float, float] | None = None
    checked: bool = False
    store_id: str | None = None
    digest: str | None = None
    photos: tuple[np.ndarray, ...] | None = None
    anomaly_labels: bool = False

    def __post_init__(self):
        for split, x in (("train", self.x_train), ("test", self.x_test)):
            if x.dtype not in (np.float32, np.uint8):
                raise TypeError(f"{split} examples must be float32 or uint8, got {x.dtype}")
            if x.dtype == np.uint8 and not self.binary:
                raise TypeError("uint8 examples are 8-bit intensities, so the dataset must be binary-valued")
            if len(x) == 0:
                raise DataError(f"{self.name}: the {split} split is empty; provide more examples")
            if not self.checked and x.dtype == np.float32 and not all(np.isfinite(c).all() for c in chunks(x)):
                raise DataError(
                    f"{self.name}: the {split} split holds NaN or infinite values; clean or impute them first"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train examples have shape {self.x_train.shape[1:]} but test examples "
                f"{self.x_test.shape[1:]}"
            )
        if self.binary and not self.checked and self.x_train.dtype == np.float32:
            low, high = self.value_range
            if low < 0 or high > 1:
                raise DataError(f"{self.name}: marked binary-valued but holds values outside [0, 1]")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @functools.cached_property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest training value as models see them (uint8 / 255), scanned in chunks once."""
        if self.bounds is not None:
            return self.bounds
        low, high = np.inf, -np.inf
        for start in range(0, len(self.x_train), CHUNK_ROWS):
            block = self.x_train[start : start + CHUNK_ROWS]
            low, high = min(low, float(block.min())), max(high, float(block.max()))
        scale = 255.0 if self.x_train.dtype == np.uint8 else 1.0
        return low / scale, high / scale


# The fewest training rows a table is trained on: those of 10 rows split at the default test fraction of 0.2.
MIN_TABLE_ROWS = 8


def check_trainable(dataset: Dataset) -> None:
    """Refuse to train on a table (examples of one dimension) of one column (a code holds nothing the row does not),
    of fewer than :data:`MIN_TABLE_ROWS` training rows, or whose training rows are all the same (nothing to learn);
    scanned a block of rows at a time."""
    if len(dataset.shape) != 1:
        return
    x, name = dataset.x_train, dataset.name
    if dataset.shape[0] < 2:
        raise DataError(
            f"{name} has one column; an auto-encoder learns how the columns of a row go together, so give a table of "
            "at least 2 columns"
        )
    if len(x) < MIN_TABLE_ROWS:
        raise DataError(
            f"{name}: {len(x)} training rows are too few to learn from; give a table of at least {MIN_TABLE_ROWS} "
            "training rows"
        )
    first = as_float32(x[:1])
    if all((block == first).all() for block in chunks(x)):
        raise DataError(
            f"{name}: its {len(x)} training rows are all the same, so there is nothing to learn from; give rows that "
            "differ"
        )


def split_seeded(x: np.ndarray, y: np.ndarray | None, *, seed: int, test_fraction: float):
    """A reproducible random train/test split: (x_train, x_test, y_train, y_test)."""
    train, test = split_indices(len(x), seed=seed, test_fraction=test_fraction)
    if y is None:
        return x[train], x[test], None, None
    return x[train], x[test], y[train], y[test]


def split_indices(n: int, *, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The training and test indices of a reproducible random split of n examples (the same as
    :func:`split_seeded`'s)."""
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise DataError(
            f"{n} examples cannot be split into non-empty train and test sets with test fraction "
            f"{test_fraction}; provide more examples"
        )
    order = np.random.default_rng(seed).permutation(n)
    return order[n_test:], order[:n_test]


def class_numbers(dataset: Dataset, classes) -> tuple[int, ...]:
    """``classes`` (``--normal-class``'s values) as label numbers of ``dataset``: an int is a label number; a string
    is the name of a class where the data names one so (a folder's subfolder, a store's label_names), else a label
    number written out ("3"). Refused in one line where a string is neither, or where two values are one class."""
    names = dataset.label_names or ()
    labels = []
    for value in classes:
        if isinstance(value, str) and value in names:
            labels.append(names.index(value))
        elif isinstance(value, str) and not value.isdecimal():
            raise DataError(
                f"--normal-class {value!r}: {dataset.name} has no class of that name; "
                f"its classes are {describe_classes(dataset)}"
            )
        else:
            labels.append(int(value))
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise DataError(f"--normal-class names class {describe_classes(dataset, repeated)} twice; name it once")
    return tuple(labels)


def describe_classes(dataset: Dataset, labels=None, separator: str = ", ") -> str:
    """The classes ``labels`` (default: those of the training split) as a user names them: their names where the data
    has them, else their numbers."""
    labels = np.unique(dataset.y_train) if labels is None else labels
    names = dataset.label_names
    return separator.join(names[label] if names and 0 <= label < len(names) else str(label) for label in labels)


def normal_class_problem(dataset: Dataset, classes: tuple[int, ...]) -> str | None:
    """Why a model of the training examples of ``classes`` (label numbers) cannot be trained on ``dataset`` and
    measured on its test split, in one sentence naming the fix (None: it can): the data must be labelled, the training
    split hold every class named, and the test split hold examples of them and of another class, the normal and the
    anomalous examples of the AUROC."""
    if dataset.y_train is None or dataset.y_test is None:
        return f"--normal-class needs labelled data, and {dataset.name} has no labels; drop --normal-class"
    missing = sorted(set(classes) - set(np.unique(dataset.y_train).tolist()))
    if missing:
        return (
            f"--normal-class {describe_classes(dataset, missing, ',')}: {dataset.name} has no training examples "
            f"of that class; its classes are {describe_classes(dataset)}"
        )
    given = f"--normal-class {describe_classes(dataset, classes, ',')}"
    tested = np.unique(dataset.y_test)
    normal = np.isin(tested, classes)
    if not normal.any():
        return (
            f"{given}: {dataset.name}'s test split has no examples of that class, so no AUROC can be measured; "
            f"name a class its test split holds: {describe_classes(dataset, tested)}"
        )
    if normal.all():
        return f"{given} names every class of {dataset.name}'s test split; leave at least one out, as the anomalies"
    return None


def with_normal_training(dataset: Dataset, classes: tuple[int, ...]) -> Dataset:
    """``dataset`` with a training split of the examples of ``classes`` (label numbers) only (one-class training: a
    model of the normal data); the test split keeps every class, so that the others can be scored as the anomalies.
    Memory-mapped rows stay memory-mapped (an :class:`IndexedRows` view, nothing copied). Refused, in one line, where
    :func:`normal_class_problem` finds a problem."""
    problem = normal_class_problem(dataset, classes)
    if problem:
        raise DataError(problem)
    keep = np.flatnonzero(np.isin(dataset.y_train, classes))
    photos = None if dataset.photos is None else tuple(dataset.photos[i] for i in keep)
    return dataclasses.replace(
        dataset, x_train=rows_of(dataset.x_train, keep), y_train=dataset.y_train[keep], photos=photos
    )
