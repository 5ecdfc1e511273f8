"""The store's writer: ``aekit pack SOURCE --out STORE``, any ``--dataset`` source packed once into a store
(:mod:`aekit.data.store.format`).

The source's entry in :data:`aekit.data.sources.SOURCES` gives its plan (:mod:`aekit.data.store.plans`; an image
folder's, :mod:`aekit.data.store.decoding`, decoded by ``workers`` processes, :mod:`aekit.data.store.pool`, each chunk
handed back through a scratch file in the hidden folder below rather than pickled). Its chunks are written in order
with plain writes, hashed and summed (the statistics) on the way, and fsynced in the background.

Atomic: everything is written into a hidden folder beside STORE, ``.STORE.partial-HOST-PID-XXXXXXXX``, renamed onto
STORE once complete (the manifest is written last). A killed pack leaves only that folder; the next pack of the same
STORE on the same machine removes it once its process is gone.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from aekit.atomic import check_folder, umask, writing
from aekit.data.sources import check_label_column, find
from aekit.data.store import format as fmt
from aekit.data.store.decoding import HEADERS_PER_CHUNK, Redo
from aekit.data.store.plans import CHUNK_VALUES, Packing, Plan
from aekit.data.store.pool import Pool, progress_bar
from aekit.errors import DataError

# Bytes of the store written between fsyncs in the background (see _Flushing).
FLUSH_BYTES = 64 << 20


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
    label_column: str | None = None,
) -> dict:
    """Pack ``source`` into the new store ``out``; returns its manifest (see :mod:`aekit.data.store.format`).

    ``skip_bad`` leaves unreadable images and subfolders out (listed in the manifest's ``skipped``, and each passed to
    ``on_skip(relative name, reason)``) instead of refusing the folder. ``label_column``: a CSV file's column of
    anomaly labels, stored as the labels and not as a value of the rows (as ``load_dataset`` reads it).
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
        options = {
            "skip_bad": skip_bad,
            "data_dir": data_dir,
            "workers": workers,
            "progress": progress,
            "label_column": label_column,
        }
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
    """The source's plan (``options``: see :class:`aekit.data.store.plans.Packing`), :func:`_write_examples`'s result
    of writing it into ``folder`` and then the source's listing with its files' digests (:func:`_hashed_sources`); an
    image folder is planned and written again, carefully, where a try ends in :class:`Redo`."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise DataError(f"source {source!r} is not a name or a path; name digits, mnist, a file or a folder of data")
    found = find(source, "source")
    check_label_column(found, source, options["label_column"])
    planned = found.plan
    pool = Pool(workers, folder)
    redo = None
    try:
        while True:
            try:
                plan = planned(source, Packing(pool=pool, progress=progress, redo=redo, **options))
                try:
                    written = _write_examples(folder, plan, progress)
                    return plan, written, _hashed_sources(plan, pool)
                finally:
                    plan.close()
            except Redo as again:
                redo = again
    finally:
        pool.close()


def _hashed_sources(plan: Plan, pool: Pool) -> list[list] | None:
    """listing.json's entries: each source file's [relative name, size, mtime_ns] and the CRC-32 of its content (null
    where it cannot be read), so that opening the store can tell a file touched or copied back from one changed. The
    CRC of an image is taken by the worker that decoded it, of the bytes it read; the files the rows did not read
    whole (images left out, the one file of other sources) are read again, images by the pool's workers. None for a
    source without files (digits, mnist)."""
    if plan.sources is None:
        return None
    paths = fmt.source_files(plan.kind, plan.path, [name for name, _, _ in plan.sources])
    digests = plan.crc32s(paths)
    unread = [k for k, digest in enumerate(digests) if digest is None]
    if plan.kind == "images":
        tasks = (
            tuple(paths[k] for k in unread[start : start + HEADERS_PER_CHUNK])
            for start in range(0, len(unread), HEADERS_PER_CHUNK)
        )
        hashed = [digest for chunk in pool.map(_hash_files, tasks) for digest in chunk]
    else:
        hashed = _hash_files([paths[k] for k in unread])
    for k, digest in zip(unread, hashed):
        digests[k] = digest
    return [[name, size, mtime, digest] for (name, size, mtime), digest in zip(plan.sources, digests)]


def _hash_files(paths) -> list[str | None]:
    """Worker: the CRC-32 of each file's content (:func:`aekit.data.store.format.content_crc32`)."""
    return [fmt.content_crc32(path) for path in paths]


def _manifest(plan: Plan, files: dict, bounds: tuple[float, float], *, seed: int, test_fraction: float) -> dict:
    """The manifest of a store of ``plan`` holding ``files`` (:mod:`aekit.data.store` describes its fields)."""
    scale = "uint8" if plan.dtype == np.uint8 else "binary" if plan.binary else "real"
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION if plan.sizes is None else fmt.RAGGED,
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
    if plan.anomaly_labels:
        manifest[fmt.ANOMALY_LABELS] = True
    return {**manifest, "id": fmt.store_id(manifest)}


# --- writing -------------------------------------------------------------------------------------------------------


def _write_examples(folder: Path, plan: Plan, progress: bool):
    """examples.npy from the plan's chunks, training rows first (a ragged plan's images flat, one after the other, and
    its sizes.npy): their manifest entries, the training split's bounds and its statistics. The header is written,
    then the chunks in order, appended, hashed and summed on the way: the file never holds more than was decoded."""
    path, files = folder / fmt.EXAMPLES, {}
    if plan.sizes is None:
        shape, pieces = (plan.n, *plan.shape), _pieces(plan)
    else:
        sizes = np.concatenate([plan.sizes[plan.train], plan.sizes[plan.test]]).astype(np.int64)
        files[fmt.SIZES] = _write_small(folder / fmt.SIZES, _npy_bytes(sizes))
        shape, pieces = (int(fmt.example_offsets(sizes, plan.shape[0])[-1]),), _images(plan, sizes)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(plan.dtype), "fortran_order": False, "shape": shape}
    )
    offset = len(header.getvalue())
    size = offset + math.prod(shape) * plan.dtype.itemsize
    digest = hashlib.sha256(header.getvalue())
    statistics = _Statistics(plan.shape, plan.dtype)
    low, high = math.inf, -math.inf
    done = 0
    bar = progress_bar(plan.n, "packing", "ex", progress)
    try:
        with writing(path), path.open("wb") as file, _Flushing(file.fileno()) as flushing:
            file.write(header.getvalue())
            for split, values, rows, count in pieces:
                values = np.ascontiguousarray(values)
                if plan.dtype == np.float32:
                    low, high = min(low, float(values.min())), max(high, float(values.max()))
                if split == "train":
                    statistics.update(rows)
                data = memoryview(values).cast("B")
                file.write(data)
                flushing.wrote(len(data))
                digest.update(data)
                done += count
                bar.update(count)
            plan.finish()
            file.flush()
            os.fsync(file.fileno())
    finally:
        # Closed at once, as decoding's rows are: the pool's scratch file goes before anything removes the folder.
        pieces.close()
        bar.close()
    if done != plan.n or path.stat().st_size != size:
        raise AssertionError(f"{done} rows of {path.stat().st_size} bytes written for {plan.n} of {size}")
    if plan.binary and plan.dtype == np.float32 and (low < 0 or high > 1):
        raise DataError(f"{plan.name}: marked binary-valued but holds values in [{low:g}, {high:g}], outside [0, 1]")
    offsets = fmt.sampled_offsets(size, offset)
    files[fmt.EXAMPLES] = {
        "size": size,
        "sha256": digest.hexdigest(),
        "sampled": {
            "sha256": fmt.sampled_sha256(path, offset, offsets),
            "block_size": fmt.BLOCK_SIZE,
            "offsets": offsets,
        },
    }
    arrays = statistics.arrays()
    return files, (float(arrays["min"].min()), float(arrays["max"].max())), arrays


def _pieces(plan: Plan):
    """What :func:`_write_examples` writes of a plan of one shape: (split, values, the rows its statistics take,
    examples) for each chunk of rows, training rows first."""
    for split, indices in (("train", plan.train), ("test", plan.test)):
        for chunk in plan.rows(indices):
            if chunk.dtype != plan.dtype or chunk.shape[1:] != plan.shape:
                raise AssertionError(f"chunk {chunk.dtype} {chunk.shape} for {plan.dtype} {plan.shape}")
            yield split, chunk, chunk, len(chunk)


def _images(plan: Plan, sizes: np.ndarray):
    """What :func:`_write_examples` writes of a ragged plan (``sizes``: each row's height and width, in the store's
    order): (split, image, its pixels as rows of channel values, 1) for each image, training rows first, so that the
    statistics are per channel."""
    row, channels = 0, plan.shape[0]
    for split, indices in (("train", plan.train), ("test", plan.test)):
        for chunk in plan.rows(indices):
            for image in chunk:
                if image.dtype != plan.dtype or image.shape != (channels, *sizes[row]):
                    raise AssertionError(f"image {image.dtype} {image.shape} for {plan.dtype} {sizes[row]}")
                row += 1
                yield split, image, image.reshape(channels, -1).T, 1


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
