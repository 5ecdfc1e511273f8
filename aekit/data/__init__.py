"""Datasets as tensors: a name or a path becomes a :class:`Dataset` with a train and a test split.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits, the default, no network), ``mnist`` (IDX files, downloaded
with sha256 checks into a cache or read from ``data_dir``), ``.npy``/``.npz``/``.csv`` arrays (real-valued, one
example per row), a single IDX file, a folder of PNG/JPEG images and a store (:mod:`aekit.data.sources`).
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

from aekit.data.dataset import Dataset
from aekit.data.sources import NAMES, check_label_column, find
from aekit.errors import DataError
from aekit.naming import option as named

__all__ = ["Dataset", "load_dataset", "DATASET_NAMES"]

DATASET_NAMES = NAMES


def load_dataset(
    name_or_path: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    patch: int | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load a named dataset or a file/folder of data, read by its entry in :data:`aekit.data.sources.SOURCES`.

    ``seed`` and ``test_fraction`` make the train/test split for sources that do not come split.
    A folder that is a store (``aekit pack``; :func:`aekit.data.store.is_store`) opens memory-mapped, with the split
    it was packed with (:mod:`aekit.data.store.reader`). ``patch``: a folder or a store of images of any sizes for
    patch training, each photo's centre ``patch`` x ``patch`` crop its example (:mod:`aekit.data.photos`).
    ``label_column``: a CSV file's column of anomaly labels (:func:`aekit.data.arrays.load_array_file`).
    """
    # The arguments may come from a run's config.json, i.e. be any JSON value.
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise DataError(
            f"dataset {name_or_path!r} is not a name or a path; use one of {', '.join(DATASET_NAMES)} "
            "or a file or folder of data"
        )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise DataError(f"data folder {data_dir!r} is not a path; name the folder that holds the data")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed {seed!r} is not a whole number >= 0; pass e.g. 0")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction {test_fraction} is not between 0 and 1; pass e.g. 0.2")
    source = find(name_or_path, "dataset")
    check_label_column(source, name_or_path, label_column)
    if label_column is not None:
        from aekit.data.arrays import load_array_file

        return load_array_file(name_or_path, seed=seed, test_fraction=test_fraction, label_column=label_column)
    if patch is not None:
        if source.kind == "store":
            from aekit.data.store import open_store

            return open_store(name_or_path, patch=patch)
        if source.kind != "images":
            raise DataError(
                f"{named('patch', patch)} crops the photos of a folder of images or of a store packed from one, and "
                f"{name_or_path} is neither ({source.kind} data); point {named('dataset')} to a folder of PNG/JPEG "
                f"images or drop {named('patch')}"
            )
        from aekit.data.photos import load_photo_folder

        return load_photo_folder(name_or_path, patch=patch, seed=seed, test_fraction=test_fraction)
    return source.load(name_or_path, data_dir=data_dir, seed=seed, test_fraction=test_fraction)
