"""Real-valued examples from ``.npy``, ``.npz`` or ``.csv`` files, one example per row."""

from __future__ import annotations

import csv
import lzma
import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aekit.data.dataset import Dataset, IndexedRows, split_indices, split_seeded
from aekit.data.layout import as_float, image_layout
from aekit.errors import DataError

SPLIT_KEYS = {"x_train", "x_test", "y_train", "y_test"}
# The examples of a file that does not come split, with their labels as y: class labels beside x, anomaly labels
# beside X (ADBench's tables: 1 an anomaly, 0 a normal row).
_WHOLE_KEYS = {"x": {"x", "y"}, "X": {"X", "y"}}


def load_array_file(path: str | Path, *, seed: int, test_fraction: float, label_column: str | None = None) -> Dataset:
    """A :class:`Dataset` of the examples in an array file, in one scale (:mod:`aekit.data.layout`): uint8 values
    are 8-bit intensities divided by 255 and booleans 0/1 intensities (binary-valued, ``binary=True``); other
    numbers are real values taken as they are (``binary=False``; models standardize them, see
    :mod:`aekit.models.standardize`).

    ``.npy``: one array of examples. Image-shaped arrays stay images: (n, height, width) becomes
    (n, 1, height, width), (n, channels, height, width) and channels-last (n, height, width, channels) with 1 or 3
    channels become (n, channels, height, width); any other shape is flattened per example to (n, features).
    ``.npz``: either ``x_train`` and ``x_test`` (already split; labels optional as ``y_train`` and ``y_test``), or
    ``x`` (class labels optional as ``y``), or ``X`` (anomaly labels optional as ``y``: 1 an anomaly, 0 a normal row,
    as ADBench stores its tables), or a single array of any name. ``.csv``: numbers separated by commas, an optional
    header row; ``label_column`` names the header's column of anomaly labels (1 and 0), which is not an example's
    value. Anomaly labels are never used to fit (``Dataset.anomaly_labels``). Sources that do not come split are
    split with ``seed`` and ``test_fraction``.
    """
    path = Path(path)
    found = read_array_file(path, label_column)
    if found.given:
        (x_train, x_test), (y_train, y_test) = found.xs, found.ys
        binary = _intensities(x_train)
        x_train, x_test = (_examples(x, name) for x, name in zip(found.xs, found.names))
        return Dataset(path.name, x_train, x_test, y_train, y_test, binary=binary)
    return split_examples(
        path.name,
        found.xs[0],
        found.ys[0],
        found.names[0],
        seed=seed,
        test_fraction=test_fraction,
        anomaly_labels=found.anomaly_labels,
    )


def split_examples(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    source: str,
    *,
    seed: int,
    test_fraction: float,
    anomaly_labels: bool = False,
):
    """A :class:`Dataset` named ``name`` of the stored examples ``x`` (labels ``y`` or None; ``anomaly_labels``: they
    mark anomalies) split with ``seed`` and ``test_fraction``, in the scale and layout of :func:`load_array_file`."""
    binary = _intensities(x)
    x = _examples(x, source)
    if isinstance(x, np.memmap):  # the split as views of the file, read where used
        train, test = split_indices(len(x), seed=seed, test_fraction=test_fraction)
        x_train, x_test = IndexedRows(x, train), IndexedRows(x, test)
        y_train, y_test = (None, None) if y is None else (y[train], y[test])
    else:
        x_train, x_test, y_train, y_test = split_seeded(x, y, seed=seed, test_fraction=test_fraction)
    return Dataset(name, x_train, x_test, y_train, y_test, binary=binary, anomaly_labels=anomaly_labels)


@dataclass
class ArrayFile:
    """The examples of an array file as stored, checked (:func:`check_examples`, :func:`checked_labels`): ``xs`` is
    (x,), to be split, or (x_train, x_test) where the file comes split (``given``); ``ys`` their labels (int64) or
    None; ``names`` each one's name in messages; ``anomaly_labels``: the labels mark anomalies (1) and normal
    examples (0) rather than classes (:func:`checked_anomaly_labels`)."""

    xs: tuple[np.ndarray, ...]
    ys: tuple[np.ndarray | None, ...]
    names: tuple[str, ...]
    anomaly_labels: bool = False

    @property
    def given(self) -> bool:
        return len(self.xs) == 2


def existing_file(path: str | Path) -> Path:
    """``path``, once it is a file."""
    if not Path(path).is_file():
        raise DataError(f"{path} does not exist or is not a file; check the path")
    return Path(path)


def read_array_file(path: Path, label_column: str | None = None) -> ArrayFile:
    """The examples of a ``.npy``, ``.npz`` or ``.csv`` file, read (a plain ``.npy`` of uint8 or float32 memory-mapped)
    and checked; see :func:`load_array_file` for the arrays a file may hold and ``label_column`` (a CSV file's)."""
    existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        values, header = read_csv(path)
        if label_column is not None:
            return csv_with_labels(path, values, header, label_column)
        arrays = {"x": values}
    elif suffix in (".npy", ".npz"):
        arrays = read_numpy(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npy, .npz or .csv")
    keys = set(arrays)
    if {"x_train", "x_test"} <= keys <= SPLIT_KEYS:
        if len(keys & {"y_train", "y_test"}) == 1:
            raise DataError(
                f"{path} has labels for only one split ({', '.join(sorted(keys))}); "
                "store both y_train and y_test, or neither"
            )
        x_train, x_test = arrays["x_train"], arrays["x_test"]
        if x_train.dtype != x_test.dtype:
            raise DataError(
                f"{path} stores x_train as {x_train.dtype} and x_test as {x_test.dtype}; store both splits in one type"
            )
        names = (f"{path}[x_train]", f"{path}[x_test]")
        for x, name in zip((x_train, x_test), names):
            check_examples(x.shape, x.dtype, name)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"{path}: train examples have shape {x_train.shape[1:]} but test examples {x_test.shape[1:]}"
            )
        labels = tuple(
            checked_labels(arrays.get(k), len(x), f"{path}[{k}]")
            for k, x in zip(("y_train", "y_test"), (x_train, x_test))
        )
        return ArrayFile((x_train, x_test), labels, names)
    x_name = examples_name(keys, path)
    x = arrays[x_name]
    name = f"{path}[{x_name}]" if suffix == ".npz" else str(path)
    check_examples(x.shape, x.dtype, name)
    y = checked_labels(arrays.get("y") if x_name in _WHOLE_KEYS else None, len(x), f"{path}[y]")
    anomalies = x_name == "X" and y is not None
    if anomalies:
        checked_anomaly_labels(y, f"{path}[y]")
    return ArrayFile((x,), (y,), (name,), anomalies)


def examples_name(keys: set[str], path: Path) -> str:
    """The name of the examples in a file holding the arrays ``keys`` that do not come split: x or X (with y, their
    labels), or the only array; anything else is a DataError."""
    for x_name, whole in _WHOLE_KEYS.items():
        if x_name in keys and keys <= whole:
            return x_name
    if len(keys) == 1:
        return next(iter(keys))
    raise DataError(
        f"{path} holds arrays {sorted(keys)}; expected x_train and x_test (optionally y_train and "
        "y_test), or x or X (optionally y), or a single array"
    )


def csv_with_labels(path: Path, values: np.ndarray, header: list[str] | None, label_column: str) -> ArrayFile:
    """The examples of a CSV file whose column ``label_column`` (named in its header) holds anomaly labels: the other
    columns, and the labels as int64."""
    if header is None or label_column not in header:
        columns = "it has no header row" if header is None else f"its columns are {', '.join(header)}"
        raise DataError(f"{path} has no column {label_column!r} ({columns}); name the label column as its header does")
    column = header.index(label_column)
    labels = values[:, column]
    where = f"{path}, column {label_column!r},"
    checked_anomaly_labels(labels, where)
    x = np.delete(values, column, axis=1)
    check_examples(x.shape, x.dtype, str(path))
    return ArrayFile((x,), (labels.astype(np.int64),), (str(path),), True)


def checked_anomaly_labels(labels: np.ndarray, source: str) -> None:
    """Refuse anomaly labels other than 1 (an anomaly) and 0 (a normal example), or of one kind only: the AUROC and
    AUPRC measure how the scores tell the two apart."""
    other = labels[(labels != 0) & (labels != 1)]
    if len(other):
        raise DataError(
            f"{source} holds the label {other[0]:g}, but anomaly labels are 1 (an anomaly) and 0 (a normal row); "
            "recode the labels so"
        )
    if len(np.unique(labels)) < 2:
        kind = "anomalies (1)" if labels[0] == 0 else "normal rows (0)"
        raise DataError(
            f"{source} labels no {kind}, so no AUROC can be measured; give labels of both kinds, or no labels"
        )


def _intensities(values: np.ndarray) -> bool:
    """Whether an array's type makes its values intensities: 8-bit pixels or booleans."""
    return values.dtype in (np.uint8, np.bool_)


def read_numpy(path: Path) -> dict[str, np.ndarray]:
    """Every array in a .npz file by name, or a .npy file's single array as ``x``.

    As np.load does, the content decides, not the suffix: a zip is read as .npz, anything else as .npy (pickles are
    refused). Unlike np.load, each array's header is checked against the bytes that follow it before NumPy
    allocates the array, so a header claiming 10^12 rows is refused instead of believed.
    """
    try:
        with path.open("rb") as file:
            if file.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
                file.seek(0)
                return {"x": _read_array(file, path.stat().st_size, mapped=path)}
        arrays = {}
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                name = member.filename.removesuffix(".npy")
                if name == member.filename:
                    raise DataError(
                        f"{path} holds {member.filename!r}, which is not an .npy array; save the arrays "
                        "with numpy.savez"
                    )
                with archive.open(member) as stream:
                    arrays[name] = _read_array(stream, member.file_size)
        return arrays
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path} holds more data than fits in this machine's memory; use a smaller file") from None
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,
        RuntimeError,
        SyntaxError,
        tokenize.TokenError,
    ) as error:
        # Object arrays end up here too, refused by allow_pickle=False. NotImplementedError is a compression method
        # zipfile lacks, RuntimeError an encrypted member; NumPy's parser lets the last two out of a garbled header.
        raise DataError(
            f"{path} cannot be read as a numeric NumPy file ({_one_line(error)}); save plain numeric "
            "arrays with numpy.save or numpy.savez"
        ) from None


def _read_array(stream, size: int, mapped: Path | None = None) -> np.ndarray:
    """The .npy array in ``stream`` (``size`` bytes), once its header's claims fit in those bytes
    (:func:`read_npy_header`; its ValueError is :func:`read_numpy`'s one-line error); memory-mapped from the file
    ``mapped`` where models take its type as it is."""
    header = read_npy_header(stream, size)
    if mapped is not None and header.dtype in _MAPPED and not header.fortran and header.shape:
        # Memory-mapped: a split is read a block at a time where it is used, never the whole file at once.
        return np.load(mapped, mmap_mode="r", allow_pickle=False)
    stream.seek(0)
    return np.lib.format.read_array(stream, allow_pickle=False)


class NpyHeader:
    """What an .npy file's header says: ``shape``, ``dtype``, ``fortran`` order and where the values start."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, offset: int):
        self.shape, self.dtype, self.fortran, self.offset = shape, dtype, fortran, offset


def read_npy_header(file, size: int) -> NpyHeader:
    """The header of the .npy file open in ``file`` (``size`` bytes), checked against the bytes that follow it
    before anything of the size it claims is allocated; a damaged or lying header raises ValueError with the reason.

    Layout: magic and version (8 bytes), the header's length (2 bytes in version 1, else 4), the header (a dict
    literal of dtype, order and shape), then the values. NumPy reads as many bytes as the length field says before
    judging the header, and allocates the array before reading the values: both claims are checked here first.
    """
    try:
        version = np.lib.format.read_magic(file)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version[0]}.{version[1]}")
        header_size = int.from_bytes(file.read(2 if version == (1, 0) else 4), "little")
        if header_size > size - file.tell():
            raise ValueError(f"its header length field claims {header_size} bytes but {size - file.tell()} follow")
        file.seek(0)
        np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(file)
    except ValueError:
        raise
    except (OSError, EOFError, SyntaxError, TypeError, KeyError, RuntimeError) as error:
        raise ValueError(" ".join(str(error).split()) or type(error).__name__) from None
    if any(type(d) is not int or d < 0 for d in shape):
        raise ValueError(f"its header gives shape {shape}, not whole numbers >= 0")
    offset = file.tell()
    if not dtype.hasobject and math.prod(shape) * dtype.itemsize > size - offset:
        raise ValueError(
            f"its header promises shape {shape} of {dtype} ({math.prod(shape) * dtype.itemsize} bytes) "
            f"but {size - offset} bytes follow"
        )
    return NpyHeader(tuple(shape), dtype, bool(fortran), offset)


def npy_file_header(path: Path) -> NpyHeader:
    """:func:`read_npy_header` of the .npy file ``path``."""
    with path.open("rb") as file:
        return read_npy_header(file, os.fstat(file.fileno()).st_size)


# The types models take as they are stored (8-bit intensities, float32 values): a .npy of these is memory-mapped.
_MAPPED = (np.dtype(np.uint8), np.dtype("<f4"))


def _one_line(error: Exception) -> str:
    """An exception's message on one line (some of NumPy's span several)."""
    return " ".join(str(error).split())


def read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The numbers in a CSV file as a float64 (rows, columns) array, skipping blank lines, and the names of its
    header row (None where it has none).

    The first row is taken as a header only when none of its cells is a number, so a data row with a typo is
    reported rather than silently dropped.
    """
    rows: list[list[float]] = []
    header = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                values = [_number(cell) for cell in row]
                if not rows and header is None and all(v is None for v in values):
                    header = [cell.strip() for cell in row]
                    continue
                if None in values:
                    column = values.index(None)
                    raise DataError(
                        f"{path}: line {reader.line_num}, column {column + 1} holds {row[column]!r}, "
                        "which is not a number; the CSV must hold only numbers, with an optional "
                        "header row"
                    )
                if rows and len(values) != len(rows[0]):
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(values)} columns but the first data "
                        f"row has {len(rows[0])}; give every row the same number of columns"
                    )
                rows.append(values)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{path} cannot be read as a UTF-8 CSV file ({error}); save it as comma-separated numbers in UTF-8"
        ) from None
    if not rows:
        raise DataError(f"{path} holds no data rows; it needs one row of comma-separated numbers per example")
    return np.array(rows, dtype=np.float64), header


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _examples(values: np.ndarray, source: str) -> np.ndarray:
    """Examples as float32 in one scale (uint8 / 255), images as (n, channels, height, width) and anything else as
    (n, features); see :func:`load_array_file`."""
    check_examples(values.shape, values.dtype, source)
    shape, channels_last = image_layout(values.shape[1:])
    if isinstance(values, np.memmap) and not channels_last:
        return values.reshape(len(values), *shape)  # a view of the file: uint8 or float32, as models take them
    if channels_last:
        values = values.transpose(0, 3, 1, 2)
    return as_float(values.reshape(len(values), *shape), source)


def check_examples(shape: tuple[int, ...], dtype: np.dtype, source: str) -> None:
    """Examples of this ``shape`` and ``dtype`` (read, or claimed by a header) are numbers, at least one value in each
    row of an array of at least two dimensions."""
    if dtype.kind not in "biuf":
        raise DataError(f"{source} has dtype {dtype}, not numbers; store a float or integer array")
    if len(shape) < 2:
        raise DataError(
            f"{source} has shape {shape} but examples must be the rows of an array of shape "
            "(n, features); reshape it, e.g. to (n, 1) for a single feature"
        )
    if math.prod(shape) == 0:
        raise DataError(f"{source} is empty (shape {shape}); it needs at least one value per example")


def checked_labels(labels: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    """Labels as int64, one per example, or None where there are none."""
    if labels is None:
        return None
    if labels.shape != (n,):
        raise DataError(
            f"{source} has shape {labels.shape} but there are {n} examples; store one label per example in a 1-D array"
        )
    if labels.dtype.kind not in "iu":
        raise DataError(f"{source} has dtype {labels.dtype}; labels must be integers, e.g. y.astype(int)")
    return labels.astype(np.int64)
