"""``aekit pack SOURCE --out STORE``: any ``--dataset`` source packed once into a store (:mod:`aekit.data.store`).

Sources: ``digits``, ``mnist`` (``data_dir`` or the cache), an ``.npy``/``.npz``/``.csv`` file, a folder of PNG/JPEG
images, and a single IDX file (``.idx`` or ``-ubyte``, optionally ``.gz``; no labels). Rows go to the store in the
seeded split of :func:`aekit.data.dataset.split_indices` (the one ``load_dataset`` makes with the same seed and test
fraction), training rows first, each split in increasing source order.

Memory stays bounded whatever the size of the source: an image folder is decoded by ``workers`` processes, a chunk
of images at a time, at most two chunks a worker in flight, each handed back through a scratch file in the hidden
folder below rather than pickled; a plain ``.npy`` or IDX file is read a window of rows at a time (never mapped
whole); chunks are written in order with plain writes, hashed and summed (the statistics) on the way. ``.npz``,
``.csv``, gzipped IDX, digits and mnist are read whole, as ``load_dataset`` reads them.

An image folder is decoded once: its first image is decoded first and its size and layout taken for all, and each
image is checked against them as it is decoded. A folder where that guess fails (another size, colour after gray, 16
bits after 8, an unreadable image) is packed again the careful way: every header read first, so that a size mismatch
names the first image that differs and ``--skip-bad`` leaves out unreadable headers, then the pixels. Nothing is sized
from headers before an image has decoded (a forged header costs no memory or disk), and no row is written once an
image has failed to decode, as the split is then drawn again without it.

Atomic: everything is written into a hidden folder beside STORE, ``.STORE.partial-HOST-PID-XXXXXXXX``, renamed onto
STORE once complete (the manifest is written last). A killed pack leaves only that folder; the next pack of the same
STORE on the same machine removes it once its process is gone.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import math
import mmap
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aekit.atomic import check_folder, umask, writing
from aekit.data import store as fmt
from aekit.data.dataset import split_indices
from aekit.data.layout import as_float, image_layout
from aekit.errors import DataError

# Images decoded per task, at most; fewer where images are large (CHUNK_BYTES per chunk).
IMAGES_PER_CHUNK = 256
CHUNK_BYTES = 32 << 20
# Headers read per task.
HEADERS_PER_CHUNK = 1024
# Values per chunk of an array source, and the most bytes of a source file read at once for one chunk.
CHUNK_VALUES = 1 << 21
SPAN_BYTES = 64 << 20
# Bytes of the store written between fsyncs in the background (see _Flushing).
FLUSH_BYTES = 64 << 20
# prctl's option that has the kernel send a signal to a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


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
    # Unreadable images and subfolders (their names end in "/") left out: relative name -> reason.
    skipped: dict[str, str] = field(default_factory=dict)
    sources: list[tuple[str, int, int]] | None = None  # the source's files: (relative name, size, mtime_ns)
    source_sha256: dict | None = None
    finish: Callable[[], None] = lambda: None  # called once every row is written
    close: Callable[[], None] = lambda: None

    @property
    def n(self) -> int:
        return len(self.train) + len(self.test)


def pack(
    source: str,
    out: str | Path,
    *,
    workers: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    skip_bad: bool = False,
    data_dir: str | Path | None = None,
    progress: bool = True,
    on_skip: Callable[[str, str], None] | None = None,
) -> dict:
    """Pack ``source`` into the new store ``out``; returns its manifest (see :mod:`aekit.data.store`).

    ``skip_bad`` leaves unreadable images and subfolders out (listed in the manifest's ``skipped``, and each passed to
    ``on_skip(relative name, reason)``) instead of refusing the folder.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"--workers {workers!r} is not a whole number >= 1; pass e.g. {os.cpu_count() or 1}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed {seed!r} is not a whole number >= 0; pass e.g. 0")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction {test_fraction} is not between 0 and 1; pass e.g. 0.2")
    out = Path(out)
    if os.path.lexists(out):
        raise DataError(f"{out} already exists; name a new folder for the store, or delete it first")
    check_folder(out)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    with writing(out):
        partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{_partial_prefix(out)}-{os.getpid()}-"))
    try:
        partial.chmod(0o777 & ~umask())
        options = {"skip_bad": skip_bad, "data_dir": data_dir, "workers": workers, "progress": progress}
        manifest = _pack_into(partial, source, seed=seed, test_fraction=test_fraction, on_skip=on_skip, **options)
        with writing(out):
            if os.path.lexists(out):
                raise DataError(f"{out} appeared while packing; name a new folder for the store")
            os.rename(partial, out)
            _fsync_folder(out.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _pack_into(folder: Path, source: str, *, seed: int, test_fraction: float, on_skip, **options) -> dict:
    """Write the store of ``source`` into ``folder`` (``options``: see :func:`_planned_and_written`); returns its
    manifest."""
    plan, (files, bounds, statistics), listing = _planned_and_written(
        folder, source, seed=seed, test_fraction=test_fraction, **options
    )
    if listing is not None:
        files[fmt.LISTING] = _write_small(folder / fmt.LISTING, fmt.listing_bytes(listing))
    if plan.labels is not None:
        labels = np.concatenate([plan.labels[plan.train], plan.labels[plan.test]]).astype(np.int64)
        files[fmt.LABELS] = _write_small(folder / fmt.LABELS, _npy_bytes(labels))
    files[fmt.SPLIT] = _write_small(
        folder / fmt.SPLIT, fmt.npz_bytes({"train": plan.train.astype(np.int64), "test": plan.test.astype(np.int64)})
    )
    files[fmt.STATISTICS] = _write_small(folder / fmt.STATISTICS, fmt.npz_bytes(statistics))
    if plan.sources is not None and fmt.source_entries(plan.kind, plan.path) != plan.sources:
        raise DataError(f"{plan.path} changed while it was being packed; pack it again once it stays as it is")
    manifest = _manifest(plan, files, bounds, seed=seed, test_fraction=test_fraction)
    _write_small(folder / fmt.MANIFEST, fmt.manifest_bytes(manifest))
    _fsync_folder(folder)
    for name in sorted(plan.skipped):
        if on_skip is not None:
            on_skip(name, plan.skipped[name])
    return manifest


def _planned_and_written(
    folder: Path, source: str, *, workers: int, progress: bool, **options
) -> tuple[Plan, tuple, list | None]:
    """The source's plan (``options``: see :func:`_plan`), :func:`_write_examples`'s result of writing it into
    ``folder`` and then the source's listing with its files' digests (:func:`_hashed_sources`); an image folder is
    planned and written again, carefully, where a try ends in :class:`_Redo`."""
    pool = _Pool(workers, folder)
    redo = None
    try:
        while True:
            try:
                plan = _plan(source, pool=pool, progress=progress, redo=redo, **options)
                try:
                    written = _write_examples(folder, plan, progress)
                    return plan, written, _hashed_sources(plan, pool)
                finally:
                    plan.close()
            except _Redo as again:
                redo = again
    finally:
        pool.close()


def _hashed_sources(plan: Plan, pool: _Pool) -> list[list] | None:
    """listing.json's entries: each source file's [relative name, size, mtime_ns] and the CRC-32 of its content (null
    where it cannot be read), so that opening the store can tell a file touched or copied back from one changed. An
    image folder's images are read again by the pool's workers (by this process for ``--workers 1``: 5% more CPU
    time for a pack of 64x64 PNGs), one file by this process. None for a source without files (digits, mnist)."""
    if plan.sources is None:
        return None
    paths = fmt.source_files(plan.kind, plan.path, [name for name, _, _ in plan.sources])
    if plan.kind == "images":
        tasks = (tuple(paths[start : start + HEADERS_PER_CHUNK]) for start in range(0, len(paths), HEADERS_PER_CHUNK))
        digests = [digest for chunk in pool.map(_hash_files, tasks) for digest in chunk]
    else:
        digests = _hash_files(paths)
    return [[name, size, mtime, digest] for (name, size, mtime), digest in zip(plan.sources, digests)]


def _hash_files(paths) -> list[str | None]:
    """Worker: the CRC-32 of each file's content (:func:`aekit.data.store.content_crc32`)."""
    return [fmt.content_crc32(path) for path in paths]


def _manifest(plan: Plan, files: dict, bounds: tuple[float, float], *, seed: int, test_fraction: float) -> dict:
    """The manifest of a store of ``plan`` holding ``files`` (:mod:`aekit.data.store` describes its fields)."""
    scale = "uint8" if plan.dtype == np.uint8 else "binary" if plan.binary else "real"
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "name": plan.name,
        "shape": list(plan.shape),
        "dtype": plan.dtype.name,
        "binary": plan.binary,
        "scale": fmt.SCALES[scale],
        "n": plan.n,
        "n_train": len(plan.train),
        "n_test": len(plan.test),
        "split": plan.split,
        "seed": seed if plan.split == "seeded" else None,
        "test_fraction": float(test_fraction) if plan.split == "seeded" else None,
        "bounds": list(bounds),
        "labels": plan.labels is not None,
        "label_names": plan.label_names,
        "skipped": sorted(plan.skipped),
        "source": {
            "kind": plan.kind,
            "path": str(plan.path) if plan.path is not None else None,
            "listing_sha256": None if plan.sources is None else fmt.listing_sha256(plan.sources),
            "sha256": plan.source_sha256,
        },
        "files": files,
    }
    return {**manifest, "id": fmt.store_id(manifest)}


# --- writing -------------------------------------------------------------------------------------------------------


def _write_examples(folder: Path, plan: Plan, progress: bool):
    """examples.npy from the plan's chunks, training rows first: its manifest entry, the training split's bounds
    and its statistics. The chunks are written in order, hashed and summed on the way."""
    path = folder / fmt.EXAMPLES
    shape = (plan.n, *plan.shape)
    with writing(path):
        np.lib.format.open_memmap(path, mode="w+", dtype=plan.dtype, shape=shape)._mmap.close()
    size = path.stat().st_size
    offset = size - math.prod(shape) * plan.dtype.itemsize
    digest = hashlib.sha256()
    statistics = _Statistics(plan.shape, plan.dtype)
    low, high = math.inf, -math.inf
    done = 0
    bar = _bar(plan.n, "packing", "ex", progress)
    try:
        with writing(path), path.open("r+b") as file, _Flushing(file.fileno()) as flushing:
            digest.update(file.read(offset))
            for split, indices in (("train", plan.train), ("test", plan.test)):
                for chunk in plan.rows(indices):
                    if chunk.dtype != plan.dtype or chunk.shape[1:] != plan.shape:
                        raise AssertionError(f"chunk {chunk.dtype} {chunk.shape} for {plan.dtype} {plan.shape}")
                    chunk = np.ascontiguousarray(chunk)
                    if plan.dtype == np.float32:
                        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
                    if split == "train":
                        statistics.update(chunk)
                    data = memoryview(chunk).cast("B")
                    file.write(data)
                    flushing.wrote(len(data))
                    digest.update(data)
                    done += len(chunk)
                    bar.update(len(chunk))
            plan.finish()
            file.flush()
            os.fsync(file.fileno())
    finally:
        bar.close()
    if done != plan.n:
        raise AssertionError(f"{done} rows written for {plan.n}")
    if plan.binary and plan.dtype == np.float32 and (low < 0 or high > 1):
        raise DataError(f"{plan.name}: marked binary-valued but holds values in [{low:g}, {high:g}], outside [0, 1]")
    offsets = fmt.sampled_offsets(size, offset)
    entry = {
        "size": size,
        "sha256": digest.hexdigest(),
        "sampled": {
            "sha256": fmt.sampled_sha256(path, offset, offsets),
            "block_size": fmt.BLOCK_SIZE,
            "offsets": offsets,
        },
    }
    arrays = statistics.arrays()
    return {fmt.EXAMPLES: entry}, (float(arrays["min"].min()), float(arrays["max"].max())), arrays


class _Flushing:
    """fsync of a file being written, in a thread, each time FLUSH_BYTES more were written (and the last is done): the
    disk writes while images decode, and the final fsync, which waits, finds little left (it took 3% of a pack of
    PNGs). The thread starts at the first flush, after the pool's worker processes were forked."""

    def __init__(self, fd: int):
        self.fd, self.unflushed, self.flush = fd, 0, None
        self.thread = ThreadPoolExecutor(1)

    def wrote(self, size: int) -> None:
        self.unflushed += size
        if self.unflushed >= FLUSH_BYTES and (self.flush is None or self.flush.done()):
            if self.flush is not None:
                self.flush.result()  # its error, if any: a later fsync might not report it again
            self.flush, self.unflushed = self.thread.submit(os.fsync, self.fd), 0

    def __enter__(self) -> _Flushing:
        return self

    def __exit__(self, *failed) -> None:
        self.thread.shutdown(wait=True)
        if self.flush is not None and failed[0] is None:
            self.flush.result()


class _Statistics:
    """Per-feature mean, standard deviation, min and max of rows seen a block at a time, as models see the values
    (float64; uint8 / 255). uint8 rows are summed exactly, as integers (sums and sums of squares: a fifth of the
    time of float64 blocks); float32 rows are merged with Chan et al.'s pairwise update."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.exact, self.count = dtype == np.uint8, 0
        if self.exact:
            self.sum, self.squares = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
            self.low, self.high = np.full(shape, 255, np.uint8), np.zeros(shape, np.uint8)
        else:
            self.mean, self.m2 = np.zeros(shape), np.zeros(shape)
            self.low, self.high = np.full(shape, np.inf), np.full(shape, -np.inf)

    def update(self, rows: np.ndarray) -> None:
        # uint8 blocks of at most 2^16 rows: their sums of squares (at most 2^16 * 255^2) fit in uint32. float64
        # blocks of at most CHUNK_VALUES values, as they are copies.
        step = 1 << 16 if self.exact else max(1, CHUNK_VALUES // max(1, math.prod(rows.shape[1:])))
        for start in range(0, len(rows), step):
            block = rows[start : start + step]
            if self.exact:  # einsum: no temporary array, half the time of summing squares made first
                flat = block.reshape(len(block), -1)
                self.sum += np.einsum("ij->j", flat, dtype=np.uint32).reshape(self.sum.shape)
                self.squares += np.einsum("ij,ij->j", flat, flat, dtype=np.uint32).reshape(self.sum.shape)
            else:
                self._merge(block.astype(np.float64))
            self.count += len(block)
            np.minimum(self.low, block.min(0), out=self.low)
            np.maximum(self.high, block.max(0), out=self.high)

    def _merge(self, block: np.ndarray) -> None:
        n = len(block)
        mean = block.mean(0)
        m2 = ((block - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta**2 * (self.count * n / total)

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.exact:
            return {"mean": self.mean, "std": np.sqrt(self.m2 / self.count), "min": self.low, "max": self.high}
        n = self.count
        # (255 n)^2 variance = n * sum of squares - sum^2, in Python's integers (it outgrows int64), divided once:
        # a feature that never varies has a standard deviation of exactly 0.
        spread = self.squares.astype(object) * n - self.sum.astype(object) ** 2
        variance = (spread / (255 * n) ** 2).astype(np.float64)
        return {"mean": self.sum / (255.0 * n), "std": np.sqrt(variance), "min": self.low / 255, "max": self.high / 255}


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _write_small(path: Path, data: bytes) -> dict:
    with writing(path), path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _bar(total: int, desc: str, unit: str, progress: bool):
    from tqdm.auto import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread: worker processes are forked while a bar is open

    return Bar(total=total, desc=desc, unit=unit, disable=None if progress else True, leave=False)


# --- partial folders -----------------------------------------------------------------------------------------------


def _partial_prefix(out: Path) -> str:
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
    return f".{out.name}.partial-{host}"


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the partial folders of ``out`` left by packs on this machine whose process is gone; returns them."""
    prefix = _partial_prefix(out) + "-"
    removed = []
    try:
        candidates = list(out.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        if not candidate.name.startswith(prefix) or not candidate.is_dir() or candidate.is_symlink():
            continue
        pid = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


# --- sources -------------------------------------------------------------------------------------------------------


def _plan(
    source: str,
    *,
    seed: int,
    test_fraction: float,
    skip_bad: bool,
    data_dir,
    pool: _Pool,
    progress: bool,
    redo: _Redo | None,
) -> Plan:
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise DataError(f"source {source!r} is not a name or a path; name digits, mnist, a file or a folder of data")
    split = {"seed": seed, "test_fraction": test_fraction}
    if source == "digits":
        return _digits_plan(**split)
    if source == "mnist":
        return _mnist_plan(data_dir)
    path = Path(source).absolute()
    if path.is_dir():
        if fmt.is_store(path):
            raise DataError(f"{source} is already a store; train on it with --dataset {source}")
        return _images_plan(path, skip_bad=skip_bad, pool=pool, progress=progress, redo=redo, **split)
    from aekit.data.files import is_idx

    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz", ".csv") or is_idx(path):
        if not path.is_file():
            raise DataError(f"{source} does not exist or is not a file; check the path")
        if is_idx(path):
            return _idx_plan(path, **split)
        return _array_file_plan(path, **split)
    if path.exists():
        raise DataError(
            f"{source}: unsupported file type {path.suffix!r}; use .npy, .npz, .csv, an IDX file or a folder of images"
        )
    raise DataError(
        f"unknown source {source!r}: use digits, mnist, a .npy/.npz/.csv or IDX file or a folder of PNG/JPEG images"
    )


def _seeded(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    train, test = split_indices(n, seed=seed, test_fraction=test_fraction)
    return np.sort(train), np.sort(test)


def _index_chunks(indices: np.ndarray, rows: int, span: int) -> Iterator[np.ndarray]:
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
        for chunk in _index_chunks(indices, rows, span):
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


def _check_examples(shape: tuple[int, ...], dtype: np.dtype, source: str) -> None:
    """The checks of :func:`aekit.data.arrays._examples`, on a header's claims."""
    if dtype.kind not in "biuf":
        raise DataError(f"{source} has dtype {dtype}, not numbers; store a float or integer array")
    if len(shape) < 2:
        raise DataError(
            f"{source} has shape {shape} but examples must be the rows of an array of shape "
            "(n, features); reshape it, e.g. to (n, 1) for a single feature"
        )
    if math.prod(shape) == 0:
        raise DataError(f"{source} is empty (shape {shape}); it needs at least one value per example")


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
        train, test = _seeded(n, seed, test_fraction)
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
        sources=fmt.source_entries(kind, path) if path is not None else None,
        close=rows.close,
    )


def _array_file_plan(path: Path, *, seed: int, test_fraction: float) -> Plan:
    from aekit.data import arrays

    suffix = path.suffix.lower()
    if suffix == ".npy":
        with path.open("rb") as file:
            zipped = file.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
        if not zipped:
            return _npy_plan(path, seed=seed, test_fraction=test_fraction)
    sources = fmt.source_entries("npy" if suffix == ".npy" else suffix[1:], path)
    if suffix == ".csv":
        values = {"x": arrays.read_csv(path)}
    else:
        values = arrays.read_numpy(path)
    keys = set(values)
    kind = "csv" if suffix == ".csv" else "npz"
    common = {"name": path.name, "kind": kind, "path": path, "seed": seed, "test_fraction": test_fraction}
    if {"x_train", "x_test"} <= keys <= arrays.SPLIT_KEYS:
        if len(keys & {"y_train", "y_test"}) == 1:
            raise DataError(
                f"{path} has labels for only one split ({', '.join(sorted(keys))}); "
                "store both y_train and y_test, or neither"
            )
        x_train, x_test = values["x_train"], values["x_test"]
        if x_train.dtype != x_test.dtype:
            raise DataError(
                f"{path} stores x_train as {x_train.dtype} and x_test as {x_test.dtype}; store both splits in one type"
            )
        for key, x in (("x_train", x_train), ("x_test", x_test)):
            _check_examples(x.shape, x.dtype, f"{path}[{key}]")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"{path}: train examples have shape {x_train.shape[1:]} but test examples {x_test.shape[1:]}"
            )
        labels = None
        if "y_train" in keys:
            labels = np.concatenate(
                [
                    arrays.checked_labels(values["y_train"], len(x_train), f"{path}[y_train]"),
                    arrays.checked_labels(values["y_test"], len(x_test), f"{path}[y_test]"),
                ]
            )
        rows = _Rows(
            (len(x_train) + len(x_test), *x_train.shape[1:]), x_train.dtype, f"{path}", given_parts=(x_train, x_test)
        )
        plan = _array_plan(rows, labels=labels, given=len(x_train), **common)
    else:
        x_name = arrays.examples_name(keys, path)
        x = values[x_name]
        source = f"{path}[{x_name}]" if kind == "npz" else str(path)
        _check_examples(x.shape, x.dtype, source)
        labels = arrays.checked_labels(values.get("y") if x_name == "x" else None, len(x), f"{path}[y]")
        plan = _array_plan(_Rows(x.shape, x.dtype, source, values=x), labels=labels, **common)
    plan.sources = sources
    return plan


def _npy_plan(path: Path, *, seed: int, test_fraction: float) -> Plan:
    """A plain .npy file, its header checked against its size, then read a window of rows at a time."""
    size = path.stat().st_size
    try:
        with path.open("rb") as file:
            header = fmt.read_npy_header(file, size)
    except ValueError as error:
        raise DataError(
            f"{path} is truncated, forged or not a NumPy file ({error}); save plain numeric arrays with numpy.save"
        ) from None
    if header.dtype.hasobject:
        raise DataError(
            f"{path} holds Python objects, which are never unpickled; save plain numeric arrays with numpy.save"
        )
    _check_examples(header.shape, header.dtype, str(path))
    if header.fortran:  # rows are not contiguous: map it (checked above) and gather rows from the map
        rows = _Rows(header.shape, header.dtype, str(path), values=np.load(path, mmap_mode="r"))
    else:
        rows = _Rows(header.shape, header.dtype, str(path), path=path, offset=header.offset)
    return _array_plan(rows, name=path.name, kind="npy", path=path, seed=seed, test_fraction=test_fraction)


def _idx_plan(path: Path, *, seed: int, test_fraction: float) -> Plan:
    """A single IDX file of examples (the first dimension counts them): plain, read a window at a time after its
    header is checked against its size, or gzipped, read whole as :func:`aekit.data.idx.read_idx_file` does."""
    from aekit.data import idx

    if path.suffix.lower() == ".gz":
        values = idx.read_idx_file(path)
        _check_examples(values.shape, values.dtype, str(path))
        rows = _Rows(values.shape, values.dtype, str(path), values=values)
    else:
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                header_size, dims, dtype, expected = idx.header_layout(file.read(4 + 4 * idx.MAX_DIMS), str(path))
        except OSError as error:
            raise DataError(f"{path} cannot be read ({error.strerror}); check the path and its permissions") from None
        idx.check_size(str(path), expected, size)
        _check_examples(dims, dtype, str(path))
        rows = _Rows(dims, dtype, str(path), path=path, offset=header_size)
    return _array_plan(rows, name=path.name, kind="idx", path=path, seed=seed, test_fraction=test_fraction)


def _digits_plan(*, seed: int, test_fraction: float) -> Plan:
    """scikit-learn's digits as :func:`aekit.data.digits.load_digits` gives them: float32 counts / 16."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    plan = _array_plan(
        _Rows(x.shape, x.dtype, "digits", values=x),
        name="digits",
        kind="digits",
        path=None,
        seed=seed,
        test_fraction=test_fraction,
        labels=bunch.target.astype(np.int64),
    )
    plan.binary, plan.label_names = True, [str(int(t)) for t in bunch.target_names]
    return plan


def _mnist_plan(data_dir) -> Plan:
    """MNIST as :func:`aekit.data.mnist.load_mnist` gives it (sha256-checked), stored as its 8-bit pixels."""
    from aekit.data import mnist

    data = mnist.load_mnist(data_dir=data_dir)
    x_train, x_test = data.x_train, data.x_test

    def rows(indices: np.ndarray) -> Iterator[np.ndarray]:
        for chunk in _index_chunks(indices, 8192, len(x_train) + len(x_test)):
            part = x_train[chunk] if chunk[0] < len(x_train) else x_test[chunk - len(x_train)]
            yield np.rint(part * 255).astype(np.uint8)

    n_train = len(x_train)
    return Plan(
        name="mnist",
        kind="mnist",
        path=Path(data_dir or mnist.cache_dir()).absolute(),
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


# --- image folders -------------------------------------------------------------------------------------------------


class _Redo(Exception):
    """An image folder to pack again carefully, every header read first (see :func:`_images_plan`), and without the
    images of ``bad`` (path -> reason): those whose pixels, not header, proved unreadable under ``--skip-bad``."""

    def __init__(self, bad: dict[str, str]):
        super().__init__(f"pack the image folder again, without {len(bad)} unreadable images")
        self.bad = bad


def _images_plan(
    folder: Path,
    *,
    seed: int,
    test_fraction: float,
    skip_bad: bool,
    pool: _Pool,
    progress: bool,
    redo: _Redo | None,
) -> Plan:
    """An image folder's plan. The first try decodes the first image here and takes its size and layout for every
    image, each checked as it is decoded: any image that does not fit, or cannot be read, ends the try
    (:class:`_Redo`). A redo first reads every header, as ``aekit.data.images`` does: a size mismatch is reported
    naming the first image that differs, and under ``skip_bad`` unreadable headers are left out. Either way the
    store is sized from an image that decoded, never from headers alone: they are only claims."""
    from aekit.data import images

    unreadable = {}  # subfolders left out under skip_bad: relative name -> reason
    entries = images.image_listing(folder, unreadable if skip_bad else None)
    if not entries:
        raise DataError(
            f"{folder} holds no images ({', '.join(images.IMAGE_SUFFIXES)}); point to a folder of PNG or JPEG files"
        )
    names = [name for name, _, _ in entries]
    paths = [os.path.join(folder, name) for name in names]
    exclude = {} if redo is None else dict(redo.bad)
    # The first image's pixels, or under skip_bad the reason they cannot be decoded.
    first = None if redo is not None else _trial(paths[0], skip_bad)
    careful = not isinstance(first, np.ndarray)  # a redo, or a first image that cannot be read
    if careful:
        if isinstance(first, str):
            exclude[paths[0]] = first
        skipped, names, paths, (shape, dtype) = _read_carefully(folder, names, paths, skip_bad, pool, progress, exclude)
    else:
        skipped, shape, dtype = {}, first.shape, first.dtype
    skipped.update(unreadable)
    try:
        train, test = _seeded(len(paths), seed, test_fraction)
    except DataError:  # too few images: read every header first, as a bad or mismatched one is named before this
        if careful:
            raise
        raise _Redo({}) from None
    labels = images.name_labels(names)
    return Plan(
        name=folder.name,
        kind="images",
        path=folder,
        shape=shape,
        dtype=dtype,
        binary=True,
        train=train,
        test=test,
        split="seeded",
        labels=labels,
        label_names=None if labels is None else sorted({name.split("/", 1)[0] for name in names}),
        skipped=skipped,
        sources=entries,
        **_decoding(paths, shape, dtype, skip_bad, pool, careful, exclude),
    )


def _left_out(names: list[str], paths: list[str], headers: list, exclude: dict[str, str]) -> tuple[dict, list]:
    """The images left out (relative name -> reason: its header's, or ``exclude``'s by path), and (name, path,
    header) of each of the others."""
    skipped, good = {}, []
    for name, path, header in zip(names, paths, headers):
        if isinstance(header, str) or path in exclude:
            skipped[name] = header if isinstance(header, str) else exclude[path]
        else:
            good.append((name, path, header))
    return skipped, good


def _trial(path: str, skip_bad: bool) -> np.ndarray | str:
    """An image's pixels as :func:`_decode` gives them (gray as one channel), or under ``skip_bad`` the reason they
    cannot be decoded."""
    from aekit.data.images import decoded

    try:
        return decoded(path, 1)
    except DataError as error:
        if not skip_bad:
            raise
        return _reason(error)


def _read_carefully(
    folder: Path, names: list[str], paths: list[str], skip_bad: bool, pool: _Pool, progress: bool, exclude: dict
) -> tuple[dict[str, str], list[str], list[str], tuple]:
    """The careful way: every header read, then the images from the first whose pixels decode (the store is sized
    from it, not from headers alone). Returns the images left out (name -> reason: under ``skip_bad``, those whose
    header cannot be read, those of ``exclude`` and those whose pixels cannot be read before the first that decodes,
    which are added to ``exclude``), the names and paths of the others and their :func:`_layout`."""
    skipped, good = _left_out(names, paths, _headers(paths, skip_bad, pool, progress), exclude)
    for k, (name, path, _) in enumerate(good):
        trial = _trial(path, skip_bad)
        if isinstance(trial, np.ndarray):
            names, paths, headers = (list(column) for column in zip(*good[k:]))
            return skipped, names, paths, _layout(paths, headers)
        skipped[name] = exclude[path] = trial
    raise DataError(f"{folder}: no image in it can be read; replace them")


def _layout(paths: list[str], headers: list) -> tuple[tuple[int, int, int], np.dtype]:
    """The (channels, height, width) and type of the store of images with these headers ((width, height), mode):
    one channel when every image is grayscale, float32 when some image has 16 bits. All must have one size."""
    from aekit.data.images import GRAY_MODES

    (width, height), _ = headers[0]
    for path, (size, _) in zip(paths, headers):
        if size != (width, height):
            raise DataError(
                f"{path} is {size[0]}x{size[1]} pixels but {paths[0]} and every image before it is "
                f"{width}x{height}; resize all images to one size"
            )
    channels = 1 if all(mode in GRAY_MODES for _, mode in headers) else 3
    dtype = np.dtype(np.float32 if any(mode.startswith("I;16") for _, mode in headers) else np.uint8)
    return (channels, height, width), dtype


def _decoding(
    paths: list[str],
    shape: tuple[int, ...],
    dtype: np.dtype,
    skip_bad: bool,
    pool: _Pool,
    careful: bool,
    exclude: dict[str, str],
) -> dict:
    """A plan's ``rows`` and ``finish`` for these images, decoded by the pool a chunk at a time. Not ``careful`` (the
    layout taken from the first image), an image that does not fit or cannot be read raises :class:`_Redo`;
    careful, the images unreadable under ``skip_bad`` are gathered and raise one once all are known, and no row is
    written from the first of them on."""
    per_chunk = max(1, min(IMAGES_PER_CHUNK, CHUNK_BYTES // (math.prod(shape) * dtype.itemsize)))
    bad = {}

    def rows(indices: np.ndarray) -> Iterator[np.ndarray]:
        tasks = (
            (tuple(paths[i] for i in indices[start : start + per_chunk]), shape, dtype.str, skip_bad, careful)
            for start in range(0, len(indices), per_chunk)
        )
        for chunk, failures, fits in pool.map(_decode, tasks, per_chunk * math.prod(shape) * dtype.itemsize):
            if not fits:
                raise _Redo({})
            bad.update(failures)
            if not bad:  # once an image failed, the split is drawn again without it: nothing more is written
                yield chunk

    def finish() -> None:
        if bad:
            raise _Redo({**exclude, **bad})

    return {"rows": rows, "finish": finish}


def _headers(paths: list[str], skip_bad: bool, pool: _Pool, progress: bool) -> list:
    """Each image's ((width, height), mode), or under ``skip_bad`` the reason it cannot be read."""
    tasks = (
        (tuple(paths[start : start + HEADERS_PER_CHUNK]), skip_bad) for start in range(0, len(paths), HEADERS_PER_CHUNK)
    )
    headers = []
    bar = _bar(len(paths), "reading headers", "img", progress)
    try:
        for chunk in pool.map(_read_headers, tasks):
            headers += chunk
            bar.update(len(chunk))
    finally:
        bar.close()
    return headers


def _read_headers(task) -> list:
    """Worker: the headers of a chunk of images (:func:`aekit.data.images.header`)."""
    from aekit.data.images import header

    paths, skip_bad = task
    out = []
    for path in paths:
        try:
            out.append(header(Path(path)))
        except DataError as error:
            if not skip_bad:
                raise
            out.append(_reason(error))
    return out


def _decode(task) -> tuple[np.ndarray, dict[str, str], bool]:
    """Worker: a chunk of images as (n, channels, height, width) in the store's type, decoded by
    :func:`aekit.data.images.decoded` (8-bit pixels as they are); under ``skip_bad`` the reason of each image that
    could not be decoded, by path (its row left zero); and whether each image fit. Not ``careful`` (the layout was
    guessed), the chunk stops at the first image that does not fit or cannot be read."""
    from aekit.data.images import decoded

    paths, shape, dtype, skip_bad, careful = task
    out = np.zeros((len(paths), *shape), np.dtype(dtype))
    bad = {}
    for i, path in enumerate(paths):
        try:
            pixels = decoded(path, shape[0])
            if pixels.shape != tuple(shape) or not np.can_cast(pixels.dtype, out.dtype):
                raise DataError(
                    f"{path} decodes to {_kind(pixels.shape, pixels.dtype)} but its header said "
                    f"{_kind(shape, out.dtype)} (forged or damaged, or changed while packing); delete or replace it"
                )
        except DataError as error:
            if not careful:
                return out, bad, False
            if not skip_bad:
                raise
            bad[path] = _reason(error)
            continue
        if pixels.dtype == out.dtype:
            out[i] = pixels
        else:  # 8-bit and 16-bit images in one folder: the store is float32, in [0, 1]
            out[i] = pixels / 255
    return out, bad, True


def _kind(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """Decoded pixels described: "WxH pixels, C channels of B bits" (16-bit images decode to float32)."""
    return f"{shape[2]}x{shape[1]} pixels, {shape[0]} channels of {8 if dtype == np.uint8 else 16} bits"


def _reason(error: DataError) -> str:
    """The reason inside a reader's one-line error ("FILE cannot be read as an image (REASON); fix")."""
    text = str(error)
    start, end = text.find(" ("), text.rfind("); ")
    return text[start + 2 : end] if 0 <= start < end else text


class _Pool:
    """Tasks run in order by ``workers`` processes (in this process where there is one), at most two tasks a worker
    in flight, so memory holds a bounded number of results whatever the number of tasks; result arrays can come back
    through a scratch file in the folder ``scratch`` (see :meth:`map`)."""

    def __init__(self, workers: int, scratch: Path):
        self.workers, self.scratch = workers, scratch
        self.executor = None

    def map(self, function, tasks, array_bytes: int = 0) -> Iterator:
        """``function(task)`` of each task, in order. With ``array_bytes``, each result is (an array of at most that
        many bytes, *rest), and the array comes back through a file both processes map (:class:`_Slots`), not
        pickled through the executor's pipe, which cost the main process more than hashing and writing it: a view
        that stays valid until the next result is asked for."""
        if self.workers == 1:
            yield from map(function, tasks)
            return
        if self.executor is None:
            # The workers' parent: this process, unless a fork server starts them (it ends when this process does).
            parent = None if multiprocessing.get_start_method() == "forkserver" else os.getpid()
            self.executor = ProcessPoolExecutor(self.workers, initializer=_worker_start, initargs=(parent,))
        slots = _Slots(self.scratch, 2 * self.workers + 1, array_bytes) if array_bytes else None
        pending = deque()
        try:
            for k, task in enumerate(tasks):
                if slots is None:
                    pending.append(self.executor.submit(function, task))
                else:
                    pending.append(self.executor.submit(_into_slot, function, task, slots.path, *slots.slot(k)))
                if len(pending) >= 2 * self.workers:
                    yield _result(pending.popleft(), slots)
            while pending:
                yield _result(pending.popleft(), slots)
        finally:
            for future in pending:
                future.cancel()
            if slots is not None:
                slots.remove()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class _Slots:
    """A scratch file in ``folder`` of ``count`` slots of ``size`` bytes each, mapped here: workers write result
    arrays into slots (:func:`_into_slot`), this process reads them where they lie."""

    def __init__(self, folder: Path, count: int, size: int):
        self.count, self.size = count, size
        with writing(folder):
            fd, self.path = tempfile.mkstemp(dir=folder, prefix=".slots-")
            try:
                os.ftruncate(fd, count * size)
                self.mapped = mmap.mmap(fd, count * size, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)

    def slot(self, k: int) -> tuple[int, int]:
        """Where the result of task ``k`` goes: (offset, size). Slots are reused in turn: the map has at most
        count - 1 tasks in flight besides the result being read."""
        return k % self.count * self.size, self.size

    def view(self, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return np.ndarray(shape, np.dtype(dtype), buffer=self.mapped, offset=offset)

    def remove(self) -> None:
        # Unlinked, not closed: views of the map may outlive the map call; it goes with the last of them.
        with writing(self.path):
            os.unlink(self.path)


def _worker_start(parent: int | None) -> None:
    """Worker: signals are the pack's process's to handle (Ctrl-C or SIGTERM sent to the whole process group stops it,
    and it then shuts the pool down), and the worker dies with its parent, even one SIGKILLed (Linux: the kernel's
    parent-death signal), rather than wait on its pipe for ever holding the scratch file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _into_slot(function, task, path: str, offset: int, size: int) -> tuple:
    """Worker: ``function(task)`` = (array, *rest), the array written into the scratch file ``path`` at ``offset``;
    returns (offset, its shape, its dtype, *rest)."""
    array, *rest = function(task)
    array = np.ascontiguousarray(array)
    if array.nbytes > size:
        raise AssertionError(f"a result of {array.nbytes} bytes for a slot of {size}")
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(memoryview(array).cast("B"))
    return (offset, array.shape, array.dtype.str, *rest)


def _result(future, slots: _Slots | None):
    """A task's result, its array read from ``slots`` where it has one."""
    try:
        result = future.result()
    except BrokenProcessPool:
        raise DataError(
            "a worker process reading images died (out of memory?); pack again with fewer --workers"
        ) from None
    if slots is None:
        return result
    offset, shape, dtype, *rest = result
    return (slots.view(offset, shape, dtype), *rest)
