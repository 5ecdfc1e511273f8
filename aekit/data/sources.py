"""The sources of data, one table: how each kind is recognised, loaded as a :class:`Dataset` (``load_dataset``, every
``--dataset``) and packed into a store (``aekit pack``, :mod:`aekit.data.store.writer`).

A source is a name (``digits``, ``mnist``) or a path: a store, a folder of PNG/JPEG images, an ``.npy``, ``.npz`` or
``.csv`` file, or a single IDX file (``.idx`` or ``-ubyte``, optionally ``.gz``; no labels). The first entry of
:data:`SOURCES` that recognises it reads it. Adding a source is an entry here, its reader in ``aekit/data/`` and its
plan in :mod:`aekit.data.store.plans` (its kind in :data:`aekit.data.store.format.SOURCE_KINDS`, which a store
records).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aekit.data.dataset import Dataset
from aekit.data.idx import is_idx
from aekit.errors import DataError
from aekit.naming import option as named


def _load_digits(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.digits import load_digits

    return load_digits(seed=seed, test_fraction=test_fraction)


def _load_mnist(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.mnist import load_mnist

    return load_mnist(data_dir=data_dir)


def _load_store(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.store.reader import open_store

    return open_store(source)


def _load_images(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.images import load_image_folder

    return load_image_folder(source, seed=seed, test_fraction=test_fraction)


def _load_array_file(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.arrays import load_array_file

    return load_array_file(source, seed=seed, test_fraction=test_fraction)


def _load_idx(source: str, *, data_dir, seed: int, test_fraction: float) -> Dataset:
    from aekit.data.idx import load_idx_file

    return load_idx_file(source, seed=seed, test_fraction=test_fraction)


def _plan_digits(source: str, packing):
    from aekit.data.store.plans import digits_plan

    return digits_plan(source, packing)


def _plan_mnist(source: str, packing):
    from aekit.data.store.plans import mnist_plan

    return mnist_plan(source, packing)


def _plan_store(source: str, packing):
    raise DataError(f"{source} is already a store; train on it with --dataset {source}")


def _plan_images(source: str, packing):
    from aekit.data.store.decoding import images_plan

    return images_plan(Path(source).absolute(), packing)


def _plan_array_file(source: str, packing):
    from aekit.data.store.plans import array_file_plan

    return array_file_plan(Path(source).absolute(), packing)


def _plan_idx(source: str, packing):
    from aekit.data.store.plans import idx_plan

    return idx_plan(Path(source).absolute(), packing)


def _is_store(source: str) -> bool:
    from aekit.data.store.reader import is_store

    return is_store(source)


def _suffix(suffix: str) -> Callable[[str], bool]:
    return lambda source: Path(source).suffix.lower() == suffix


@dataclass(frozen=True)
class Source:
    """A kind of source: ``recognises(source)`` says whether a name or path is one, ``load(source, *, data_dir,
    seed, test_fraction)`` reads it as a :class:`Dataset`, ``plan(source, packing)`` gives its store's
    :class:`aekit.data.store.plans.Plan`; ``file``: its paths must be files."""

    kind: str
    recognises: Callable[[str], bool]
    load: Callable[..., Dataset]
    plan: Callable
    file: bool = False


SOURCES = (
    Source("digits", lambda source: source == "digits", _load_digits, _plan_digits),
    Source("mnist", lambda source: source == "mnist", _load_mnist, _plan_mnist),
    Source("store", _is_store, _load_store, _plan_store),
    Source("images", lambda source: Path(source).is_dir(), _load_images, _plan_images),
    Source("npy", _suffix(".npy"), _load_array_file, _plan_array_file, file=True),
    Source("npz", _suffix(".npz"), _load_array_file, _plan_array_file, file=True),
    Source("csv", _suffix(".csv"), _load_array_file, _plan_array_file, file=True),
    Source("idx", is_idx, _load_idx, _plan_idx, file=True),
)
# The sources given by name.
NAMES = ("digits", "mnist")


def find(source: str, what: str) -> Source:
    """The entry of :data:`SOURCES` that reads ``source`` (a name or a path), or a one-line error that calls it
    ``what`` ("dataset", "source")."""
    entry = recognised(source)
    if entry is not None:
        if entry.file:
            from aekit.data.arrays import existing_file

            existing_file(source)
        return entry
    if Path(source).exists():
        raise DataError(
            f"{source}: unsupported file type {Path(source).suffix!r}; use .npy, .npz, .csv, an IDX file or a folder "
            "of images"
        )
    raise DataError(
        f"unknown {what} {source!r}: use {', '.join(NAMES)}, a .npy/.npz/.csv or IDX file or a folder of PNG/JPEG "
        "images"
    )


def recognised(source: str) -> Source | None:
    """The entry of :data:`SOURCES` that reads ``source`` (a name or a path), None where none does (e.g. an image
    file); nothing is checked (:func:`find` checks)."""
    return next((entry for entry in SOURCES if entry.recognises(source)), None)


def check_label_column(source: Source | None, name: str, label_column: str | None) -> None:
    """Refuse a column of anomaly labels (``--label-column``) for the source ``name`` (found as ``source``, None for
    one that is no data source, e.g. an image file) where it is not a CSV file, the one source whose columns have
    names."""
    if label_column is not None and (source is None or source.kind != "csv"):
        data = "" if source is None else f"{source.kind} data; "
        raise DataError(
            f"{named('label_column', label_column)} names a column of a CSV file, and {name} is not one "
            f"({data}an .npz file gives anomaly labels as y beside X); drop {named('label_column')}"
        )
