"""Examples handed to a trained model and the model's outputs, as files.

In: a folder of PNG/JPEG images, an IDX file (``.idx``, ``-ubyte``, either gzipped as ``.gz``) or a ``.npy`` array.
Out: a ``.npy`` array (in the input's layout; uint8 where the input was, else float32, exact), an IDX file (8-bit
pixels) or a new folder of PNG images. 8-bit values are intensities scaled by 1/255 on the way in and by 255
(rounded, clipped to [0, 1]) on the way out; other numbers are taken as they are (:mod:`aekit.data.layout`).
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from aekit.atomic import atomic_folder, atomic_write
from aekit.data.arrays import read_numpy
from aekit.data.idx import IDX_CODES, read_idx_file
from aekit.data.images import read_images
from aekit.data.layout import as_float, to_uint8
from aekit.errors import DataError

_IDX_ENDINGS = (".idx", "-ubyte", ".idx.gz", "-ubyte.gz")
FORMATS = "a folder of PNG/JPEG images, an IDX file (.idx or -ubyte, optionally .gz) or a .npy file"


def is_idx(path: Path) -> bool:
    return path.name.lower().endswith(_IDX_ENDINGS)


class Examples(NamedTuple):
    """Examples read from a file: float32 values (n, ...) in one scale, the file names of a folder's images (else
    None), and the type they were stored in (outputs written as .npy go back to it)."""

    x: np.ndarray
    names: list[str] | None
    dtype: np.dtype


def read_examples(path: str | Path) -> Examples:
    """The examples in ``path``. A folder gives (n, channels, height, width); IDX and .npy give their arrays in
    their own layout (:func:`aekit.data.layout.to_shape` maps them to a model's)."""
    path = Path(path)
    if path.is_dir():
        x, files = read_images(path)
        return Examples(x, [str(file.relative_to(path)) for file in files], np.dtype(np.float32))
    if not path.is_file():
        raise DataError(f"{path} does not exist; give {FORMATS}")
    if path.suffix.lower() == ".npy":
        arrays = read_numpy(path)
        if set(arrays) != {"x"}:
            raise DataError(f"{path} is an .npz archive, not an array; save one array with numpy.save")
        values = arrays["x"]
    elif is_idx(path):
        values = read_idx_file(path)
    else:
        raise DataError(f"{path}: unsupported input {path.suffix!r}; give {FORMATS}")
    if values.ndim < 2 or len(values) == 0:
        raise DataError(f"{path} has shape {values.shape}; it must hold one example per row of its first axis")
    return Examples(as_float(values, str(path)), None, np.dtype(np.uint8 if values.dtype == np.uint8 else np.float32))


def check_intensities(x: np.ndarray, source: str) -> None:
    """Refuse values outside [0, 1] where a model of intensities (the cross-entropy) is to take them."""
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{source} holds values in [{x.min():g}, {x.max():g}] but the run models [0, 1] "
                        "intensities; store 8-bit pixels (uint8) or divide the values by their maximum")


def check_writable(path: str | Path, image: bool) -> None:
    """Refuse, before any work, an output that cannot be written: see :func:`write_examples`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"the folder {path.parent} of {path} does not exist; create it first")
    if path.suffix.lower() == ".npy":
        return
    if not image:
        raise DataError(f"{path}: these examples are not images, so they can only be written as a .npy file")
    if is_idx(path):
        return
    if path.exists():
        raise DataError(f"{path} already exists; name a new folder for the PNG images (or a .npy or IDX file)")


def write_examples(path: str | Path, x: np.ndarray, names: list[str] | None = None, *,
                   layout: Callable[[np.ndarray], np.ndarray] = lambda y: y, dtype=np.float32) -> None:
    """Write (n, ...) float32 examples to ``path`` atomically: ``.npy`` put in ``layout`` (a function of the array)
    and stored as ``dtype`` (uint8: 8-bit intensities, else float32 values as they are); IDX (``.idx`` or
    ``-ubyte``, gzipped when it ends in ``.gz``) and a new folder of PNGs (named like ``names``, else 00000.png, ...)
    as 8-bit images, which needs (n, channels, height, width) with 1 or 3 channels."""
    path = Path(path)
    image = x.ndim == 4 and x.shape[1] in (1, 3)
    check_writable(path, image)
    if path.suffix.lower() == ".npy":
        values = layout(x)
        buffer = io.BytesIO()
        np.save(buffer, to_uint8(values) if np.dtype(dtype) == np.uint8 else values.astype(np.float32),
                allow_pickle=False)
        atomic_write(path, buffer.getvalue())
        return
    pixels = to_uint8(x)
    if is_idx(path):
        atomic_write(path, idx_bytes(pixels[:, 0] if pixels.shape[1] == 1 else pixels, gzipped=path.suffix == ".gz"))
        return
    width = max(5, len(str(len(x) - 1)))
    files = [Path(name).with_suffix(".png") for name in names] if names else [
        Path(f"{i:0{width}d}.png") for i in range(len(x))]
    with atomic_folder(path) as folder:
        for image_pixels, file in zip(pixels, files):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            mode_pixels = image_pixels[0] if image_pixels.shape[0] == 1 else image_pixels.transpose(1, 2, 0)
            Image.fromarray(mode_pixels).save(folder / file)


def idx_bytes(values: np.ndarray, gzipped: bool = False) -> bytes:
    """An array as the bytes of an IDX file (big-endian, the type code of its dtype), gzipped if asked."""
    dtype = values.dtype.newbyteorder(">")
    code = next(c for c, t in IDX_CODES.items() if t == dtype)
    header = bytes([0, 0, code, values.ndim]) + np.array(values.shape, dtype=">u4").tobytes()
    data = header + values.astype(dtype).tobytes()
    return gzip.compress(data, mtime=0) if gzipped else data
