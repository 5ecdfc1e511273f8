"""A folder of images of any sizes for patch training (``--patch P``): no resizing, each photo decoded once.

The photos are split into training and test photos by the seeded split every source without one gets
(:func:`aekit.data.dataset.split_indices`). The training photos are kept whole, in their stored type (uint8, or
float32 for 16-bit images), as the dataset's ``photos``, and training crops them at random
(:class:`aekit.training.batches.PatchSource`); the examples of both splits are each photo's centre P x P crop, so that
the test loss, the evaluation and the report measure the same fixed crops after every epoch. Channels follow the rule
of every image folder (:func:`aekit.data.images.scan_sizes`); a photo smaller than P either way is refused in one
line naming it. A store packed from such a folder opens alike (:mod:`aekit.data.store.reader`, ``open_store`` with a
patch): the same photos in the same order, each a view of its memory map.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from aekit.data.dataset import Dataset, as_float32, split_indices
from aekit.data.images import decoded, label_names, name_labels, scan_sizes
from aekit.errors import DataError
from aekit.naming import option as named

# A crop's transform t in range(TRANSFORMS): flipped left to right where t >= 4, then turned t % 4 quarter turns.
TRANSFORMS = 8


def crop(photo: np.ndarray, top: int, left: int, size: int, transform: int = 0) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``photo`` (channels, height, width) at (``top``, ``left``), flipped left to
    right where ``transform`` >= 4, then turned ``transform % 4`` quarter turns counter-clockwise (a view)."""
    patch = photo[:, top : top + size, left : left + size]
    if transform >= 4:
        patch = patch[:, :, ::-1]
    return np.rot90(patch, transform % 4, axes=(1, 2))


def centre(photo: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` crop of ``photo``: the fixed example each photo gives."""
    height, width = photo.shape[1:]
    return crop(photo, (height - size) // 2, (width - size) // 2, size)


def load_photo_folder(path: str | Path, *, patch: int, seed: int, test_fraction: float) -> Dataset:
    """Every image under ``path`` (as :func:`aekit.data.images.load_image_folder` finds and labels them), of any
    sizes at least ``patch`` pixels each way, split with ``seed`` and ``test_fraction``: the training photos whole
    as ``photos``, and each photo's centre ``patch`` x ``patch`` crop as the examples."""
    folder = Path(path)
    files, _, channels = scan_sizes(folder)
    photos = []
    for file in files:
        pixels = decoded(file, channels)
        height, width = pixels.shape[1:]
        if min(height, width) < patch:
            raise DataError(
                f"{file} is {width}x{height} pixels, smaller than the patches of {named('patch', patch)}; "
                f"remove it from {folder} or use a smaller {named('patch')}"
            )
        photos.append(pixels)
    if len({pixels.dtype for pixels in photos}) > 1:  # 16-bit images among 8-bit ones: all as float32 in [0, 1]
        photos = [as_float32(pixels) for pixels in photos]
    names = [file.relative_to(folder).as_posix() for file in files]
    y = name_labels(names)
    train, test = split_indices(len(photos), seed=seed, test_fraction=test_fraction)
    kept = tuple(photos[i] for i in train)
    x_test = np.stack([centre(photos[i], patch) for i in test])
    return Dataset(
        folder.name,
        np.stack([centre(pixels, patch) for pixels in kept]),
        x_test,
        None if y is None else y[train],
        None if y is None else y[test],
        binary=True,
        label_names=label_names(names),
        digest=_digest(kept, x_test, y, train, test),
        photos=kept,
    )


def _digest(photos: tuple[np.ndarray, ...], x_test: np.ndarray, y, train, test) -> str:
    """sha256 of what a patch run trains and is measured on: the training photos whole, in order (their shapes, type
    and pixels), the test crops and the labels of both splits."""
    digest = hashlib.sha256(b"photos;")
    for pixels in (*photos, x_test):
        digest.update(f"{pixels.shape} {pixels.dtype.str};".encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
    if y is not None:
        digest.update(np.ascontiguousarray(np.concatenate([y[train], y[test]]), dtype=np.int64).tobytes())
    return digest.hexdigest()
