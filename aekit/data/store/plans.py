"""How each source is packed (:mod:`aekit.data.sources` names the plan of each kind): a :class:`Plan` of its rows in
the store's type, its split, labels and provenance, for :mod:`aekit.data.store.writer` to write.

Rows go to the store in the seeded split of :func:`aekit.data.dataset.split_indices` (the one ``load_dataset`` makes
with the same seed and test fraction), training rows first, each split in increasing source order. Memory stays
bounded whatever the size of the source: a plain ``.npy`` or IDX file is read a window of rows at a time (never
mapped whole); ``.npz``, ``.csv``, gzipped IDX, digits and mnist are read whole by their loaders' readers. An image
folder's plan is :mod:`aekit.data.store.decoding`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aekit.data.dataset import split_indices
from aekit.data.layout import as_float, image_layout
from aekit.data.store.format import source_entries
from aekit.errors import DataError

# Values per chunk of an array source, and the most bytes of a source file read at once for one chunk.
CHUNK_VALUES = 1 << 21
SPAN_BYTES = 64 << 20


@dataclass
class Plan:
    """What a source becomes: its examples (by source index), split, labels and provenance."""

    name: str
    kind: str
    path: Path | None
    shape: tuple[int, ...]
    dtype: np.dtype
    binary: bool
    train: np.ndarray  # sorted source indices of the training rows
    test: np.ndarray
    split: str  # "seeded" or "given"
    rows: Callable[[np.ndarray], Iterator[np.ndarray]]  # sorted indices of one split -> chunks in the store's type
    labels: np.ndarray | None = None  # in source order
    label_names: list[str] | None = None
    anomaly_labels: bool = False  # the labels mark anomalies (1) and normal rows (0), not classes
    # Unreadable images and subfolders (their names end in "/") left out: relative name -> reason.
    skipped: dict[str, str] = field(default_factory=dict)
    sources: list[tuple[str, int, int]] | None = None  # the source's files: (relative name, size, mtime_ns)
    source_sha256: dict | None = None
    finish: Callable[[], None] = lambda: None  # called once every row is written
    # The CRC-32 (format.crc32_text) of each source file of these paths that the rows read whole, or None.
    crc32s: Callable[[list[str]], list[str | None]] = lambda paths: [None] * len(paths)
    close: Callable[[], None] = lambda: None
    # An image folder of mixed sizes, packed ragged (format version 3): each image's (height, width) by source index,
    # ``shape`` being (channels,) and ``rows`` giving lists of (channels, height, width) images. None: one shape.
    sizes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.train) + len(self.test)


@dataclass
class Packing:
    """What a plan is made with: the split of a source that comes unsplit, mnist's folder, whether unreadable images
    are left out, the pool of worker processes, whether progress is shown, an image folder's redo
    (:class:`aekit.data.store.decoding.Redo`) or None, and a CSV file's column of anomaly labels or None."""

    seed: int
    test_fraction: float
    data_dir: str | Path | None
    skip_bad: bool
    pool: object
    progress: bool
    redo: object = None
    label_column: str | None = None


def seeded(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    train, test = split_indices(n, seed=seed, test_fraction=test_fraction)
    return np.sort(train), np.sort(test)


def index_chunks(indices: np.ndarray, rows: int, span: int) -> Iterator[np.ndarray]:
    """Sorted ``indices`` cut into runs of at most ``rows`` indices that each lie within ``span`` rows."""
    start = 0
    while start < len(indices):
        stop = min(start + rows, int(np.searchsorted(indices, indices[start] + span, side="left")))
        stop = max(stop, start + 1)
        yield indices[start:stop]
        start = stop


class _Rows:
    """Rows of a raw array (in memory, memory-mapped, or in a C-order file read a window at a time), converted to
    the store's type and layout: uint8 stays, anything else becomes float32 (booleans 0/1) after the finiteness
    check of :func:`aekit.data.layout.as_float`; image-shaped rows become (channels, height, width)."""

    def __init__(
        self,
        raw_shape: tuple[int, ...],
        dtype: np.dtype,
        source: str,
        *,
        values=None,
        path=None,
        offset: int = 0,
        given_parts: tuple = (),
    ):
        self.raw_shape, self.raw_dtype, self.source = tuple(raw_shape), np.dtype(dtype), source
        self.values, self.path, self.offset, self.parts = values, path, offset, given_parts
        self.file = path.open("rb") if path is not None else None
        self.shape, self.channels_last = image_layout(self.raw_shape[1:])
        self.dtype = np.dtype(np.uint8) if self.raw_dtype == np.uint8 else np.dtype(np.float32)
        self.row_values = math.prod(self.raw_shape[1:])

    def __call__(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        rows = max(1, CHUNK_VALUES // max(1, math.prod(self.shape)))
        # Rows of a file are read as one block from the first index of a chunk to its last: at most SPAN_BYTES.
        span = max(1, SPAN_BYTES // (self.row_values * self.raw_dtype.itemsize)) if self.file else 1 << 62
        for chunk in index_chunks(indices, rows, span):
            yield self.convert(self.take(chunk))

    def take(self, indices: np.ndarray) -> np.ndarray:
        if self.parts:  # a source that comes split: x_train's rows, then x_test's
            first = self.parts[0]
            if indices[0] < len(first):
                return first[indices]
            return self.parts[1][indices - len(first)]
        if self.file is None:
            return self.values[indices]
        low, high = int(indices[0]), int(indices[-1]) + 1
        count = (high - low) * self.row_values
        self.file.seek(self.offset + low * self.row_values * self.raw_dtype.itemsize)
        block = np.fromfile(self.file, dtype=self.raw_dtype, count=count)
        if block.size != count:
            raise DataError(
                f"{self.source} was truncated while it was being packed; pack it again once it stays as it is"
            )
        return block.reshape(high - low, *self.raw_shape[1:])[indices - low]

    def convert(self, raw: np.ndarray) -> np.ndarray:
        if self.channels_last:
            raw = raw.transpose(0, 3, 1, 2)
        raw = raw.reshape(len(raw), *self.shape)
        if self.dtype == np.uint8:
            return np.ascontiguousarray(raw, dtype=np.uint8)
        return as_float(raw, self.source)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _array_plan(
    rows: _Rows,
    *,
    name: str,
    kind: str,
    path: Path,
    seed: int,
    test_fraction: float,
    labels=None,
    given: int | None = None,
) -> Plan:
    n = rows.raw_shape[0]
    if given is None:
        train, test = seeded(n, seed, test_fraction)
    else:
        train, test = np.arange(given), np.arange(given, n)
    return Plan(
        name=name,
        kind=kind,
        path=path,
        shape=rows.shape,
        dtype=rows.dtype,
        binary=rows.raw_dtype in (np.uint8, np.bool_),
        train=train,
        test=test,
        split="seeded" if given is None else "given",
        rows=rows,
        labels=labels,
        sources=source_entries(kind, path) if path is not None else None,
        close=rows.close,
    )


def array_file_plan(path: Path, packing: Packing) -> Plan:
    """A ``.npy``, ``.npz`` or ``.csv`` file: a plain ``.npy`` read a window of rows at a time (:func:`_npy_plan`),
    any other read whole by :func:`aekit.data.arrays.read_array_file` (a CSV file's column of anomaly labels
    ``packing.label_column`` left out of the rows). As for the loader, the content decides: a ``.npy`` file that is
    a zip is packed as an .npz. Labels that mark anomalies (an .npz file's y beside X, a CSV file's label column)
    are stored as such."""
    from aekit.data.arrays import read_array_file

    split = {"seed": packing.seed, "test_fraction": packing.test_fraction}
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with path.open("rb") as file:
            zipped = file.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
        if not zipped:
            return _npy_plan(path, **split)
    sources = source_entries("npy" if suffix == ".npy" else suffix[1:], path)
    found = read_array_file(path, packing.label_column)
    common = {"name": path.name, "kind": "csv" if suffix == ".csv" else "npz", "path": path, **split}
    if found.given:
        x_train, x_test = found.xs
        labels = None if found.ys[0] is None else np.concatenate(found.ys)
        rows = _Rows((len(x_train) + len(x_test), *x_train.shape[1:]), x_train.dtype, f"{path}", given_parts=found.xs)
        plan = _array_plan(rows, labels=labels, given=len(x_train), **common)
    else:
        x, source = found.xs[0], found.names[0]
        plan = _array_plan(_Rows(x.shape, x.dtype, source, values=x), labels=found.ys[0], **common)
    plan.sources, plan.anomaly_labels = sources, found.anomaly_labels
    return plan


def _npy_plan(path: Path, *, seed: int, test_fraction: float) -> Plan:
    """A plain .npy file, its header checked against its size, then read a window of rows at a time."""
    from aekit.data.arrays import check_examples, npy_file_header

    try:
        header = npy_file_header(path)
    except ValueError as error:
        raise DataError(
            f"{path} is truncated, forged or not a NumPy file ({error}); save plain numeric arrays with numpy.save"
        ) from None
    if header.dtype.hasobject:
        raise DataError(
            f"{path} holds Python objects, which are never unpickled; save plain numeric arrays with numpy.save"
        )
    check_examples(header.shape, header.dtype, str(path))
    if header.fortran:  # rows are not contiguous: map it (checked above) and gather rows from the map
        rows = _Rows(header.shape, header.dtype, str(path), values=np.load(path, mmap_mode="r"))
    else:
        rows = _Rows(header.shape, header.dtype, str(path), path=path, offset=header.offset)
    return _array_plan(rows, name=path.name, kind="npy", path=path, seed=seed, test_fraction=test_fraction)


def idx_plan(path: Path, packing: Packing) -> Plan:
    """A single IDX file of examples (the first dimension counts them): plain, read a window at a time after its
    header is checked against its size, or gzipped, read whole as :func:`aekit.data.idx.read_idx_file` does."""
    from aekit.data import idx
    from aekit.data.arrays import check_examples

    if path.suffix.lower() == ".gz":
        values = idx.read_idx_file(path)
        check_examples(values.shape, values.dtype, str(path))
        rows = _Rows(values.shape, values.dtype, str(path), values=values)
    else:
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                header_size, dims, dtype, expected = idx.header_layout(file.read(4 + 4 * idx.MAX_DIMS), str(path))
        except OSError as error:
            raise DataError(f"{path} cannot be read ({error.strerror}); check the path and its permissions") from None
        idx.check_size(str(path), expected, size)
        check_examples(dims, dtype, str(path))
        rows = _Rows(dims, dtype, str(path), path=path, offset=header_size)
    split = {"seed": packing.seed, "test_fraction": packing.test_fraction}
    return _array_plan(rows, name=path.name, kind="idx", path=path, **split)


def digits_plan(name: str, packing: Packing) -> Plan:
    """scikit-learn's digits as :func:`aekit.data.digits.load_digits` gives them: float32 counts / 16."""
    from aekit.data.digits import read_digits

    x, y = read_digits()
    plan = _array_plan(
        _Rows(x.shape, x.dtype, "digits", values=x),
        name="digits",
        kind="digits",
        path=None,
        seed=packing.seed,
        test_fraction=packing.test_fraction,
        labels=y,
    )
    plan.binary, plan.label_names = True, [str(d) for d in range(10)]
    return plan


def mnist_plan(name: str, packing: Packing) -> Plan:
    """MNIST as :func:`aekit.data.mnist.load_mnist` gives it (sha256-checked), stored as its 8-bit pixels."""
    from aekit.data import mnist

    data = mnist.load_mnist(data_dir=packing.data_dir)
    x_train, x_test = data.x_train, data.x_test

    def rows(indices: np.ndarray) -> Iterator[np.ndarray]:
        for chunk in index_chunks(indices, 8192, len(x_train) + len(x_test)):
            part = x_train[chunk] if chunk[0] < len(x_train) else x_test[chunk - len(x_train)]
            yield np.rint(part * 255).astype(np.uint8)

    n_train = len(x_train)
    return Plan(
        name="mnist",
        kind="mnist",
        path=Path(packing.data_dir or mnist.cache_dir()).absolute(),
        shape=tuple(x_train.shape[1:]),
        dtype=np.dtype(np.uint8),
        binary=True,
        train=np.arange(n_train),
        test=np.arange(n_train, n_train + len(x_test)),
        split="given",
        rows=rows,
        labels=np.concatenate([data.y_train, data.y_test]),
        label_names=[str(d) for d in range(10)],
        source_sha256=dict(mnist.SHA256),
    )
