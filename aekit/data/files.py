"""Examples handed to a trained model and the model's outputs, as files, read and written a block of rows at a time.

In: a folder of PNG/JPEG images, a store (``aekit pack``; all its examples in the store's order: its training split,
then its test split), an IDX file (``.idx``, ``-ubyte``, either gzipped as ``.gz``), a ``.npy`` array, or a table:
an ``.npz`` or ``.csv`` file as training reads them (:func:`aekit.data.arrays.load_array_file`; an .npz file split in
two, its training split then its test split), read whole. Nothing else is copied whole as floats: a ``.npy`` file, a
store and a plain IDX file are memory-mapped, a gzipped IDX file is held in its stored type (8-bit pixels) and a
folder's images are decoded when their rows are asked for; each block of rows becomes float32 in the one scale of
:mod:`aekit.data.layout` when it is read (8-bit values / 255, other numbers as they are).

Out: a ``.npy`` array (in the input's layout; uint8 where the input was, else float32, exact), an IDX file (8-bit
pixels) or a new folder of PNG images; 8-bit outputs are values clipped to [0, 1], times 255, rounded. Outputs are
written a block at a time into a temporary file or folder that takes the output's name once complete
(:mod:`aekit.atomic`), so a failure part way leaves nothing.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from aekit.atomic import atomic_file, atomic_folder, check_output
from aekit.codec import COMPRESSED_SUFFIX
from aekit.data.arrays import csv_with_labels, read_array_file, read_csv, read_npy_header, read_numpy
from aekit.data.dataset import CHUNK_ROWS
from aekit.data.idx import IDX_CODES, is_idx, map_idx_file
from aekit.data.images import IMAGE_SUFFIXES, read_image_block, scan_images
from aekit.data.layout import as_float, to_uint8
from aekit.data.store import EXAMPLES, is_store, open_store
from aekit.errors import DataError

FORMATS = (
    "a folder of PNG/JPEG images, a store (aekit pack), an IDX file (.idx or -ubyte, optionally .gz), a .npy file or "
    "a table (.npz or .csv)"
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# The most bytes a part of a path may have on the usual file systems (ext4, XFS, APFS).
_NAME_MAX = 255
# Suffixes that name a file: an output named so is a mistake for the folder of PNGs that any other name gets.
_FILE_SUFFIXES = frozenset(
    {*IMAGE_SUFFIXES, ".gif", ".bmp", ".tif", ".tiff", ".webp", ".npz", ".csv", ".gz", COMPRESSED_SUFFIX}
)


class Rows:
    """Examples as float32 in one scale (:func:`aekit.data.layout.as_float`), converted from their stored values
    only when sliced: ``rows[a:b]`` reads those rows alone, ``numpy.asarray(rows)`` all of them. ``stored`` is an
    array of any numbers, or a folder's images (:class:`_Images`), sliced by rows."""

    dtype = np.dtype(np.float32)

    def __init__(self, stored, source: str):
        self.stored, self.source = stored, source
        self.shape, self.ndim = tuple(stored.shape), len(stored.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        return as_float(self.stored[rows], self.source)

    def __iter__(self):
        for start in range(0, len(self), CHUNK_ROWS):
            yield from self[start : start + CHUNK_ROWS]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


class _Images:
    """The images of :func:`aekit.data.images.scan_images`, decoded a slice at a time."""

    def __init__(self, files: list[Path], shape: tuple[int, int, int]):
        self.files, self.shape = files, (len(files), *shape)

    def __getitem__(self, rows: slice) -> np.ndarray:
        files = self.files[rows]
        return read_image_block(files, self.shape[1]) if files else np.empty((0, *self.shape[1:]), np.float32)


class Examples(NamedTuple):
    """Examples read from a file: their :class:`Rows` (n, ...), the file names of a folder's images (else None), and
    the type they were stored in (outputs written as .npy go back to it)."""

    x: Rows
    names: list[str] | None
    dtype: np.dtype


class Labelled(NamedTuple):
    """The :class:`Examples` of a table and the labels it gives (None where none), which mark anomalies (1) and
    normal examples (0) where ``anomaly_labels``, else classes."""

    examples: Examples
    labels: np.ndarray | None
    anomaly_labels: bool


def read_table(path: str | Path, label_column: str | None = None, required: bool = True) -> Labelled:
    """The examples of an ``.npz`` or ``.csv`` file and their labels: y beside x or X (X's mark anomalies; see
    :func:`aekit.data.arrays.load_array_file`), or a CSV file's column ``label_column`` of anomaly labels (the column
    is then no example's value); a header without it is refused, or with ``required`` False read as all values."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        values, header = read_csv(path)
        if label_column is None or (not required and (header is None or label_column not in header)):
            return Labelled(Examples(Rows(values, str(path)), None, np.dtype(np.float32)), None, False)
        found = csv_with_labels(path, values, header, label_column)
    else:
        found = read_array_file(path)
    values = found.xs[0] if len(found.xs) == 1 else np.concatenate(found.xs)
    labels = None if found.ys[0] is None else np.concatenate(found.ys)
    dtype = np.dtype(np.uint8 if values.dtype == np.uint8 else np.float32)
    return Labelled(Examples(Rows(values, str(path)), None, dtype), labels, found.anomaly_labels)


def read_examples(path: str | Path) -> Examples:
    """The examples in ``path``, none read yet. A folder of images gives (n, channels, height, width); a store, IDX,
    .npy and a table (:func:`read_table`) give their arrays in their own layout (:func:`aekit.data.layout.to_shape`
    maps them to a model's)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".npz", ".csv"):
        return read_table(path).examples
    if is_store(path):
        open_store(path)  # its checks: manifest, sizes, digests, source
        values = np.load(path / EXAMPLES, mmap_mode="r")
    elif path.is_dir():
        files, shape = scan_images(path)
        names = [str(file.relative_to(path)) for file in files]
        return Examples(Rows(_Images(files, shape), str(path)), names, np.dtype(np.float32))
    elif not path.is_file():
        raise DataError(f"{path} does not exist; give {FORMATS}")
    elif path.suffix.lower() == ".npy":
        values = _read_npy(path)
    elif is_idx(path):
        values = map_idx_file(path)
    else:
        raise DataError(f"{path}: unsupported input {path.suffix!r}; give {FORMATS}")
    if values.ndim < 2 or len(values) == 0:
        raise DataError(f"{path} has shape {values.shape}; it must hold one example per row of its first axis")
    as_float(values[:0], str(path))  # refuses values that are not numbers before any work
    return Examples(Rows(values, str(path)), None, np.dtype(np.uint8 if values.dtype == np.uint8 else np.float32))


def _read_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, memory-mapped once its header's claims fit the file. As numpy decides, the content
    says what it is: a zip is an .npz archive, read by :func:`aekit.data.arrays.read_numpy`, and must hold x alone."""
    try:
        with path.open("rb") as file:
            zipped = file.read(4) in _ZIP_MAGIC
            file.seek(0)
            header = None if zipped else read_npy_header(file, os.fstat(file.fileno()).st_size)
    except (ValueError, OSError) as error:
        raise _not_numpy(path, error) from None
    if header is None:
        arrays = read_numpy(path)
        if set(arrays) != {"x"}:
            raise DataError(f"{path} is an .npz archive, not an array; save one array with numpy.save")
        return arrays["x"]
    if header.dtype.hasobject:
        raise _not_numpy(path, "it holds Python objects, which are never unpickled")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise _not_numpy(path, error) from None


def _not_numpy(path: Path, reason) -> DataError:
    return DataError(
        f"{path} cannot be read as a numeric NumPy file ({reason}); save plain numeric arrays with numpy.save"
    )


def check_intensities(x: np.ndarray, source: str) -> None:
    """Refuse values outside [0, 1] where a model of intensities (the cross-entropy) is to take them."""
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"{source} holds values in [{x.min():g}, {x.max():g}] but the run models [0, 1] "
            "intensities; store 8-bit pixels (uint8) or divide the values by their maximum"
        )


def check_folder_of(path: Path) -> None:
    """Refuse an output ``path`` whose folder does not exist."""
    if not path.parent.is_dir():
        raise DataError(f"the folder {path.parent} of {path} does not exist; create it first")


def check_writable(path: str | Path, image: bool, overwrite: bool = False, inputs=(), may_hold=()) -> None:
    """Refuse, before any work, an output that cannot be written (see :func:`write_examples`), or that
    :func:`aekit.atomic.check_output` refuses (``overwrite``, ``inputs``, ``may_hold``: see there)."""
    path = Path(path)
    check_folder_of(path)
    folder = path.suffix.lower() != ".npy" and not is_idx(path)
    if folder and not image:
        raise DataError(f"{path}: these examples are not images, so they can only be written as a .npy file")
    if folder and path.suffix.lower() in _FILE_SUFFIXES:
        raise DataError(
            f"{path} is named like a {path.suffix} file, but anything other than a .npy or IDX file is written as a "
            "folder of PNG images; name a folder (e.g. out), a .npy or an IDX file"
        )
    check_output(path, overwrite, folder=folder, inputs=inputs, may_hold=may_hold)


def _as_given(y: np.ndarray) -> np.ndarray:
    return y


def write_examples(
    path: str | Path,
    x: np.ndarray,
    names: list[str] | None = None,
    *,
    layout: Callable[[np.ndarray], np.ndarray] = _as_given,
    dtype=np.float32,
    overwrite: bool = False,
) -> None:
    """Write (n, ...) float32 examples to ``path`` atomically: ``.npy`` put in ``layout`` (a function of the array)
    and stored as ``dtype`` (uint8: 8-bit intensities, else float32 values as they are); IDX (``.idx`` or
    ``-ubyte``, gzipped when it ends in ``.gz``) and a folder of PNGs (named like ``names``, else 00000.png, ...)
    as 8-bit images, which needs (n, channels, height, width) with 1 or 3 channels. An existing ``path`` is refused
    unless ``overwrite`` (:func:`aekit.atomic.check_output`)."""
    with writing_examples(path, x.shape, names, layout=layout, dtype=dtype, overwrite=overwrite) as write:
        write(x)


@contextlib.contextmanager
def writing_examples(
    path: str | Path,
    shape: tuple[int, ...],
    names: list[str] | None = None,
    *,
    layout: Callable[[np.ndarray], np.ndarray] = _as_given,
    dtype=np.float32,
    overwrite: bool = False,
):
    """:func:`write_examples` of ``shape[0]`` examples of shape ``shape[1:]``, handed over a block of rows at a
    time: the block gets the function that takes the next rows (float32, in order). The output appears, complete,
    when the block ends with every row written (replacing what was there, with ``overwrite``); a failure in the
    block leaves nothing new."""
    path = Path(path)
    n = shape[0]
    check_writable(path, image=len(shape) == 4 and shape[1] in (1, 3), overwrite=overwrite)
    if path.suffix.lower() == ".npy":
        stored = np.dtype(np.uint8 if np.dtype(dtype) == np.uint8 else np.float32)
        laid_out = layout(np.broadcast_to(np.float32(0), shape)).shape[1:]  # a stand-in of no memory
        header = _npy_header((n, *laid_out), stored)
        encode = (lambda y: to_uint8(layout(y))) if stored == np.uint8 else (lambda y: layout(y).astype(np.float32))
        sink = _rows_file(path, header, encode)
    elif is_idx(path):
        header = idx_header(np.dtype(np.uint8), (n, *shape[2:]) if shape[1] == 1 else shape)
        sink = _rows_file(path, header, to_uint8, gzipped=path.suffix.lower() == ".gz")
    else:
        sink = _png_folder(path, names, n, replace=overwrite)
    with sink as put:
        written = 0

        def write(y: np.ndarray) -> None:
            nonlocal written
            if written + len(y) > n:
                raise ValueError(f"{written + len(y)} examples handed to {path}, which was opened for {n}")
            put(y, written)
            written += len(y)

        yield write
        if written != n:
            raise ValueError(f"{written} examples handed to {path}, which was opened for {n}")


@contextlib.contextmanager
def _rows_file(path: Path, header: bytes, encode: Callable[[np.ndarray], np.ndarray], gzipped: bool = False):
    """A file of ``header`` and then the bytes of each block of rows put (``encode``d), gzipped if asked; the block
    gets the function that puts rows."""
    # wbits 31: a gzip stream, header and trailer included, as gzip.compress writes one with mtime=0.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31) if gzipped else None
    with atomic_file(path) as file:

        def write(data) -> None:
            file.write(compressor.compress(data) if compressor else data)

        def put(y: np.ndarray, start: int) -> None:
            write(memoryview(np.ascontiguousarray(encode(y))).cast("B"))

        write(header)
        yield put
        if compressor:
            file.write(compressor.flush())


def png_names(names: list[str]) -> list[Path]:
    """The files of a folder of PNGs of images named ``names`` (relative paths, "/" between parts): each name with
    its suffix made .png, or, where two would then be one file (a.jpg and a.png) or one a folder of another (a.jpg
    and a.png/b.jpg), each of those its whole name with .png after it (a.jpg.png). A DataError where that is still
    not one file an image, or a part of a name would pass the 255 bytes a file system allows."""
    files = [Path(name).with_suffix(".png") for name in names]
    clashes = _clashes(files)
    files = [Path(name + ".png") if file in clashes else file for name, file in zip(names, files)]
    if clashes := _clashes(files):
        raise DataError(f"two images would be written to {next(iter(clashes))}; rename one of them")
    for name, file in zip(names, files):
        if any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX for part in file.parts):
            raise DataError(f"the image {name!r} would be written to a name of over {_NAME_MAX} bytes; rename it")
    return files


def _clashes(files: list[Path]) -> set[Path]:
    """The files named twice, or named as well as the folder of another."""
    folders = {folder for file in files for folder in file.parents}
    return {file for file, count in collections.Counter(files).items() if count > 1 or file in folders}


@contextlib.contextmanager
def _png_folder(path: Path, names: list[str] | None, n: int, replace: bool = False):
    """A folder of 8-bit PNGs named like ``names`` (else 00000.png, ...), new or ``replace``-ing the one there; the
    block gets the function that writes a block of images and the position of its first."""
    width = max(5, len(str(n - 1)))
    files = png_names(names) if names else [Path(f"{i:0{width}d}.png") for i in range(n)]
    with atomic_folder(path, replace) as folder:

        def write(y: np.ndarray, start: int) -> None:
            for image_pixels, file in zip(to_uint8(y), files[start : start + len(y)]):
                (folder / file).parent.mkdir(parents=True, exist_ok=True)
                mode_pixels = image_pixels[0] if image_pixels.shape[0] == 1 else image_pixels.transpose(1, 2, 0)
                # Said, not guessed from the name: Pillow takes no suffix from a name like "..png".
                Image.fromarray(mode_pixels).save(folder / file, format="PNG")

        yield write


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header numpy.save writes before a C-order array of ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(dtype)
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def idx_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The header of an IDX file of values of ``dtype`` (its type code) and ``shape``."""
    code = next(c for c, t in IDX_CODES.items() if t == dtype.newbyteorder(">"))
    return bytes([0, 0, code, len(shape)]) + np.array(shape, dtype=">u4").tobytes()


def idx_bytes(values: np.ndarray, gzipped: bool = False) -> bytes:
    """An array as the bytes of an IDX file (big-endian, the type code of its dtype), gzipped if asked."""
    dtype = values.dtype.newbyteorder(">")
    data = idx_header(dtype, values.shape) + values.astype(dtype).tobytes()
    return gzip.compress(data, mtime=0) if gzipped else data
