"""A folder of PNG/JPEG images as a dataset, labelled by subfolder when the images sit in subfolders.

Images are read upright, as their EXIF orientation (a phone's photos) says. An image Pillow cannot read, or one of
more pixels than its limit (``PIL.Image.MAX_IMAGE_PIXELS``), is a one-line :class:`DataError`; Pillow's other
warnings are not shown.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import warnings
from pathlib import Path
from stat import S_ISREG

import numpy as np
from PIL import ExifTags, Image

from aekit.data.dataset import Dataset, split_seeded
from aekit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Modes with one intensity per pixel; "LA" drops its alpha. 16-bit modes get their own scale (see _pixels).
GRAY_MODES = {"1", "L", "LA", "I;16", "I;16L", "I;16B"}

# Everything Pillow raises for a file it cannot decode.
_UNREADABLE = (OSError, SyntaxError, ValueError)
# Pillow refuses an image of more than twice Image.MAX_IMAGE_PIXELS, and warns of one above it: both are refused.
_TOO_LARGE = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# The transposition that shows an image upright, by its EXIF orientation (tag 0x0112; 1 and others: as stored), as
# cameras and phones record it; 5 to 8 swap width and height.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPPING = {_UPRIGHT[orientation] for orientation in (5, 6, 7, 8)}


def load_image_folder(path: str | Path, *, seed: int, test_fraction: float) -> Dataset:
    """Every image under ``path`` (recursively, see :func:`read_images`) split with ``seed`` and ``test_fraction``.

    When no image lies directly in ``path``, each image's top-level subfolder is its class: the sorted
    subfolder names are numbered 0, 1, ... as labels. Otherwise there are no labels.
    """
    folder = Path(path)
    x, files = read_images(folder)
    names = [file.relative_to(folder).as_posix() for file in files]
    y = name_labels(names)
    x_train, x_test, y_train, y_test = split_seeded(x, y, seed=seed, test_fraction=test_fraction)
    return Dataset(folder.name, x_train, x_test, y_train, y_test, binary=True, label_names=label_names(names))


def read_images(folder: Path) -> tuple[np.ndarray, list[Path]]:
    """Every image under ``folder`` (recursively, in sorted order) as float32 (n, channels, height, width) in
    [0, 1], and their paths. All images must have the same size. One channel when every image is grayscale,
    else three (RGB)."""
    # Headers first (cheap), so a size mismatch is reported before any pixels are decoded.
    files, (channels, height, width) = scan_images(folder)
    # One image decoded before room is made for all: headers are only claims, and a folder of forged ones is
    # refused by its first file rather than believed.
    first = _pixels(files[0], channels)
    try:
        x = np.empty((len(files), channels, height, width), dtype=np.float32)
    except MemoryError:
        raise DataError(
            f"{folder}: {len(files)} images of {width}x{height} pixels need "
            f"{len(files) * first.nbytes / 2**30:.1f} GiB as float32, more than this machine's memory; "
            "resize them or use fewer"
        ) from None
    x[0] = first
    for i, file in enumerate(files[1:], start=1):
        x[i] = _pixels(file, channels)
    return x, files


def scan_images(folder: Path) -> tuple[list[Path], tuple[int, int, int]]:
    """The images :func:`read_images` reads from ``folder`` and the (channels, height, width) it gives each, with its
    checks made on the headers alone: nothing is decoded, so a folder of any size can then be read a block at a time
    (:func:`read_image_block`)."""
    files, sizes, channels = scan_sizes(folder)
    for file, size in zip(files, sizes):
        if size != sizes[0]:
            raise DataError(
                f"{file} is {size[0]}x{size[1]} pixels but {files[0]} and every image before it is "
                f"{sizes[0][0]}x{sizes[0][1]}; resize all images to one size"
            )
    width, height = sizes[0]
    return files, (channels, height, width)


def scan_sizes(folder: Path) -> tuple[list[Path], list[tuple[int, int]], int]:
    """The images under ``folder`` (:func:`image_files`), each one's upright (width, height) by its header, and the
    channels every one is given: one when all are grayscale, else three (RGB)."""
    files = image_files(folder)
    sizes, modes = zip(*(header(file) for file in files))
    return files, list(sizes), 1 if all(mode in GRAY_MODES for mode in modes) else 3


def image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files under ``folder`` (:func:`image_listing`'s), at least one."""
    files = [folder / name for name, _, _ in image_listing(folder)]
    if not files:
        raise DataError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); point to a folder of PNG or JPEG files"
        )
    return files


def image_listing(folder: Path, unreadable: dict[str, str] | None = None) -> list[tuple[str, int, int]]:
    """The images of a folder: every regular file, or link to one, with an image suffix, in it and in its subfolders
    that are not links (``Path.rglob``'s choice, which the stores packed before were listed with), each as
    (relative name, size, mtime_ns), in the order paths sort. A folder that cannot be read is refused in one line
    naming it, or, a subfolder, with ``unreadable`` left out and recorded there (relative name ending in "/" -> the
    reason). One scandir a folder and one stat an image: cheap enough to list again at the end of a pack."""
    entries, folders = [], [""]
    while folders:
        prefix = folders.pop()
        try:
            with os.scandir(os.path.join(folder, prefix)) as scan:
                children = list(scan)
        except OSError as error:
            if prefix and error.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # removed while the folder was listed
            if unreadable is None or not prefix:
                raise DataError(
                    f"{os.path.join(folder, prefix.rstrip('/'))} cannot be read ({error.strerror or error}); "
                    f"make it readable{f' or move it out of {folder}' if prefix else ''}"
                ) from None
            unreadable[prefix] = error.strerror or str(error)
            continue
        for child in children:
            name = child.name
            dot = name.rfind(".")  # Path.suffix: none for ".png" or "x."
            try:
                if child.is_dir(follow_symlinks=False):
                    folders.append(f"{prefix}{name}/")
                    continue
                if not 0 < dot < len(name) - 1 or name[dot:].lower() not in IMAGE_SUFFIXES:
                    continue
                stat = child.stat()
            except OSError as error:  # gone, or a broken link: not a file, as Path.is_file says
                if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
                    raise
                continue
            if S_ISREG(stat.st_mode):
                entries.append((prefix + name, stat.st_size, stat.st_mtime_ns))
    entries.sort(key=lambda entry: entry[0].split("/"))
    return entries


def read_image_block(files: list[Path], channels: int) -> np.ndarray:
    """Some of :func:`scan_images`'s files as :func:`read_images` gives them: float32 (len(files), channels,
    height, width) in [0, 1]."""
    # The first decoded before room is made for the rest: a header's size is only a claim.
    first = _pixels(files[0], channels)
    block = np.empty((len(files), *first.shape), dtype=np.float32)
    block[0] = first
    for i, file in enumerate(files[1:], start=1):
        block[i] = _pixels(file, channels)
    return block


def header(file: Path) -> tuple[tuple[int, int], str]:
    """An image's upright (width, height) (see :func:`_upright`) and Pillow mode, read without decoding the
    pixels."""
    with _reading(file), Image.open(file) as image:
        width, height = image.size
        return ((height, width) if _upright(image) in _SWAPPING else (width, height)), image.mode


def _pixels(file: Path, channels: int) -> np.ndarray:
    """An image as float32 (channels, height, width) in [0, 1]."""
    pixels = decoded(file, channels)
    return pixels.astype(np.float32) / 255 if pixels.dtype == np.uint8 else pixels


def image_bytes(file: str | Path) -> bytes:
    """An image file's bytes, read whole to be decoded (:func:`decoded`)."""
    # open() rather than Path.read_bytes: 4 us less an image, for aekit pack.
    with _reading(file), open(file, "rb") as handle:
        return handle.read()


def decoded(file: str | Path, channels: int, data: bytes | None = None) -> np.ndarray:
    """An image's pixels as stored, upright (see :func:`_upright`), (channels, height, width): uint8 for 8-bit images,
    float32 in [0, 1] for 16-bit ones (their values / 65535). ``data``: the file's bytes (:func:`image_bytes`) where
    they were read already."""
    if data is None:
        data = image_bytes(file)
    with _reading(file):
        # Decoded from memory: Pillow reads some PNG chunks by their stated length, and reading a file object asks
        # for that many bytes up front (a forged length in a 67-byte file asked for a gigabyte); BytesIO hands
        # back only what the file holds.
        with Image.open(io.BytesIO(data)) as opened:
            transposition = _upright(opened)
            image = opened if transposition is None else opened.transpose(transposition)
            if image.mode not in GRAY_MODES:
                # convert("RGB") of an RGB image is a copy of it: 8 us an image of 64x64 pixels.
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB")).transpose(2, 0, 1)
            # Pillow's conversion to "L" clips 16-bit values at 255 instead of scaling them.
            if image.mode.startswith("I;16"):
                gray = np.asarray(image, dtype=np.float32) / 65535
            else:
                gray = np.asarray(image.convert("L"))
    return np.repeat(gray[None], channels, axis=0)


def _upright(image: Image.Image) -> Image.Transpose | None:
    """The transposition that shows ``image`` upright by its EXIF orientation, or None (as stored). Only the EXIF data
    Pillow reads with the header counts (a JPEG's, a PNG's eXIf chunk before the pixels), so that a header and the
    decoded pixels always agree: a PNG's eXIf after the pixels would be found only by decoding them."""
    if image.format == "PNG" and "exif" not in image.info:
        return None
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    return _UPRIGHT.get(orientation) if isinstance(orientation, int) else None


@contextlib.contextmanager
def _reading(file: str | Path):
    """Pillow's reading of ``file`` inside the block: what it raises for a file it cannot read, and an image over its
    pixel limit (its warning), become the one-line :class:`DataError` of an unreadable image; its other warnings
    (metadata it could not parse, a palette's transparency dropped by the conversion to RGB) are silenced, as the
    pixels decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except _TOO_LARGE:
            raise DataError(
                f"{file} cannot be read as an image (more pixels than Pillow's limit of {Image.MAX_IMAGE_PIXELS}, "
                "PIL.Image.MAX_IMAGE_PIXELS); delete or replace it"
            ) from None
        except _UNREADABLE as error:
            raise DataError(f"{file} cannot be read as an image ({error}); delete or replace it") from None


def name_labels(names: list[str]) -> np.ndarray | None:
    """Class numbers of images named ``names`` ("cats/0001.png", relative to their folder): the number of each one's
    top-level subfolder among :func:`label_names`; None where some image lies directly in the folder."""
    classes = label_names(names)
    if classes is None:
        return None
    number = {name: i for i, name in enumerate(classes)}
    return np.array([number[name.split("/", 1)[0]] for name in names], dtype=np.int64)


def label_names(names: list[str]) -> tuple[str, ...] | None:
    """The classes of images named ``names``, by number: their top-level subfolders, sorted; None where some image
    lies directly in the folder (no labels)."""
    if not all("/" in name for name in names):
        return None
    return tuple(sorted({name.split("/", 1)[0] for name in names}))
