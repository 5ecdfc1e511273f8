"""Examples handed to a trained model and the model's outputs, as files.

In: a folder of PNG/JPEG images, an IDX file (``.idx``, ``-ubyte``, either gzipped as ``.gz``) or a ``.npy`` array.
Out: a ``.npy`` array (float32, exact), an IDX file (8-bit pixels) or a new folder of PNG images.
8-bit values are intensities scaled by 1/255 on the way in and by 255 (rounded, clipped to [0, 1]) on the way out.
"""
from __future__ import annotations

import gzip
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from aekit.atomic import atomic_folder, atomic_write
from aekit.data.arrays import read_numpy
from aekit.data.idx import IDX_CODES, read_idx_file
from aekit.data.images import read_images
from aekit.errors import DataError

_IDX_ENDINGS = (".idx", "-ubyte", ".idx.gz", "-ubyte.gz")
FORMATS = "a folder of PNG/JPEG images, an IDX file (.idx or -ubyte, optionally .gz) or a .npy file"


def _is_idx(path: Path) -> bool:
    return path.name.lower().endswith(_IDX_ENDINGS)


def read_examples(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """The examples in ``path`` as float32 (n, ...) and, for a folder of images, their file names relative to it
    (else None). A folder gives (n, channels, height, width); IDX and .npy give their arrays as stored."""
    path = Path(path)
    if path.is_dir():
        x, files = read_images(path)
        return x, [str(file.relative_to(path)) for file in files]
    if not path.is_file():
        raise DataError(f"{path} does not exist; give {FORMATS}")
    if path.suffix.lower() == ".npy":
        arrays = read_numpy(path)
        if set(arrays) != {"x"}:
            raise DataError(f"{path} is an .npz archive, not an array; save one array with numpy.save")
        values = arrays["x"]
    elif _is_idx(path):
        values = read_idx_file(path)
    else:
        raise DataError(f"{path}: unsupported input {path.suffix!r}; give {FORMATS}")
    return _intensities(values, str(path)), None


def _intensities(values: np.ndarray, source: str) -> np.ndarray:
    """float32 values: 8-bit integers scaled by 1/255, floats and booleans as they are."""
    if values.ndim < 2 or len(values) == 0:
        raise DataError(f"{source} has shape {values.shape}; it must hold one example per row of its first axis")
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255
    if values.dtype.kind not in "bf":
        raise DataError(f"{source} holds {values.dtype} values; store 8-bit pixels (uint8) or float intensities")
    x = values.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{source} holds NaN or infinite values; clean them first")
    return x


def as_shape(x: np.ndarray, shape: tuple[int, ...], source: str, what: str = "the run expects") -> np.ndarray:
    """``x`` as (n, *shape): equal shapes pass, (n, height, width) gains the channel of one-channel images, and
    (n, features) rows of the right length are unflattened. Anything else is a DataError naming both sizes."""
    if x.shape[1:] == tuple(shape):
        return x
    image = len(shape) == 3
    if image and shape[0] == 1 and x.shape[1:] == tuple(shape[1:]):
        return x[:, None]
    if x.ndim == 2 and x.shape[1] == math.prod(shape):
        return x.reshape(len(x), *shape)
    raise DataError(f"{source} holds examples of size {_describe(x.shape[1:])} but {what} "
                    f"{_describe(shape)}; resize them to that size")


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]} ({shape[0]} channel{'s' if shape[0] > 1 else ''})"
    if len(shape) == 2:
        return f"{shape[0]}x{shape[1]}"
    return "x".join(map(str, shape))


def check_writable(path: str | Path, image: bool) -> None:
    """Refuse, before any work, an output that cannot be written: see :func:`write_examples`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"the folder {path.parent} of {path} does not exist; create it first")
    if path.suffix.lower() == ".npy":
        return
    if not image:
        raise DataError(f"{path}: these examples are not images, so they can only be written as a .npy file")
    if _is_idx(path):
        return
    if path.exists():
        raise DataError(f"{path} already exists; name a new folder for the PNG images (or a .npy or IDX file)")


def write_examples(path: str | Path, x: np.ndarray, names: list[str] | None = None) -> None:
    """Write (n, ...) float32 examples to ``path`` atomically: ``.npy`` as they are; IDX (``.idx`` or ``-ubyte``,
    gzipped when it ends in ``.gz``) and a new folder of PNGs (named like ``names``, else 00000.png, ...) as 8-bit
    images, which needs (n, channels, height, width) with 1 or 3 channels."""
    path = Path(path)
    image = x.ndim == 4 and x.shape[1] in (1, 3)
    check_writable(path, image)
    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, x.astype(np.float32), allow_pickle=False)
        atomic_write(path, buffer.getvalue())
        return
    pixels = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    if _is_idx(path):
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
