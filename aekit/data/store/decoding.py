"""An image folder's plan (:mod:`aekit.data.store.plans`), its images decoded in parallel by the pool's worker
processes (:mod:`aekit.data.store.pool`), a chunk of images at a time, at most two chunks a worker in flight.

An image folder is decoded once: its first image is decoded first and its size and layout taken for all, and each
image is checked against them as it is decoded. A folder where that guess fails (another size, colour after gray, 16
bits after 8, an unreadable image) is packed again the careful way: every header read first, so that ``--skip-bad``
leaves out unreadable headers and every size is known, then the pixels. Nothing is sized from headers before an
image has decoded (a forged header costs no memory or disk), and no row is written once an image has failed to
decode, as the split is then drawn again without it.

A folder of images of mixed sizes is packed ragged (format version 3, :mod:`aekit.data.store.format`): found the
careful way, each image is then decoded at its own size, with the channels and type the folder's training read gives
every image (:func:`aekit.data.images.scan_sizes`, :mod:`aekit.data.photos`), and checked against its header's size.
Its chunks are sized from the headers, but examples.npy grows only by the images that decoded (a forged header costs
address space, not memory or disk).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aekit.data import images
from aekit.data.dataset import as_float32
from aekit.data.store.format import crc32_text
from aekit.data.store.plans import Packing, Plan, seeded
from aekit.data.store.pool import Pool, progress_bar
from aekit.errors import DataError

# Images decoded per task, at most; fewer where images are large (CHUNK_BYTES per chunk).
IMAGES_PER_CHUNK = 256
CHUNK_BYTES = 32 << 20
# Headers read per task.
HEADERS_PER_CHUNK = 1024


class Redo(Exception):
    """An image folder to pack again carefully, every header read first (see :func:`images_plan`), and without the
    images of ``bad`` (path -> reason): those whose pixels, not header, proved unreadable under ``--skip-bad``."""

    def __init__(self, bad: dict[str, str]):
        super().__init__(f"pack the image folder again, without {len(bad)} unreadable images")
        self.bad = bad


def images_plan(folder: Path, packing: Packing) -> Plan:
    """An image folder's plan. The first try decodes the first image here and takes its size and layout for every
    image, each checked as it is decoded: any image that does not fit, or cannot be read, ends the try
    (:class:`Redo`). A redo first reads every header, as ``aekit.data.images`` does: under ``skip_bad`` unreadable
    headers are left out, and images of mixed sizes make a ragged plan (each at its own size). Either way the store's
    layout is taken from an image that decoded, never from headers alone: they are only claims."""
    skip_bad, pool, progress, redo = packing.skip_bad, packing.pool, packing.progress, packing.redo
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
    sizes = None
    if careful:
        if isinstance(first, str):
            exclude[paths[0]] = first
        skipped, names, paths, (shape, dtype, sizes) = _read_carefully(
            folder, names, paths, skip_bad, pool, progress, exclude
        )
    else:
        skipped, shape, dtype = {}, first.shape, first.dtype
    skipped.update(unreadable)
    try:
        train, test = seeded(len(paths), packing.seed, packing.test_fraction)
    except DataError:  # too few images: read every header first, as a bad or mismatched one is named before this
        if careful:
            raise
        raise Redo({}) from None
    classes = images.label_names(names)
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
        labels=images.name_labels(names),
        label_names=None if classes is None else list(classes),
        skipped=skipped,
        sources=entries,
        sizes=sizes,
        **(
            _decoding(paths, shape, dtype, skip_bad, pool, careful, exclude)
            if sizes is None
            else _ragged_decoding(paths, sizes, shape[0], dtype, skip_bad, pool, exclude)
        ),
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
    try:
        return images.decoded(path, 1)
    except DataError as error:
        if not skip_bad:
            raise
        return _reason(error)


def _read_carefully(
    folder: Path, names: list[str], paths: list[str], skip_bad: bool, pool: Pool, progress: bool, exclude: dict
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
            return skipped, names, paths, _layout(headers)
        skipped[name] = exclude[path] = trial
    raise DataError(f"{folder}: no image in it can be read; replace them")


def _layout(headers: list) -> tuple[tuple[int, ...], np.dtype, np.ndarray | None]:
    """The example shape and type of the store of images with these headers ((width, height), mode), and None, or
    where their sizes differ, (channels,), the type and each image's (height, width) (a ragged store): one channel
    when every image is grayscale, float32 when some image has 16 bits."""
    channels = 1 if all(mode in images.GRAY_MODES for _, mode in headers) else 3
    dtype = np.dtype(np.float32 if any(mode.startswith("I;16") for _, mode in headers) else np.uint8)
    (width, height), _ = headers[0]
    if all(size == (width, height) for size, _ in headers):
        return (channels, height, width), dtype, None
    return (channels,), dtype, np.array([(height, width) for (width, height), _ in headers], np.int64)


def _decoding(
    paths: list[str],
    shape: tuple[int, ...],
    dtype: np.dtype,
    skip_bad: bool,
    pool: Pool,
    careful: bool,
    exclude: dict[str, str],
) -> dict:
    """A plan's ``rows`` and ``finish`` for these images, decoded by the pool a chunk at a time. Not ``careful`` (the
    layout taken from the first image), an image that does not fit or cannot be read raises :class:`Redo`;
    careful, the images unreadable under ``skip_bad`` are gathered and raise one once all are known, and no row is
    written from the first of them on."""
    per_chunk = max(1, min(IMAGES_PER_CHUNK, CHUNK_BYTES // (math.prod(shape) * dtype.itemsize)))
    bad = {}
    # Each image's CRC-32, taken of the bytes it was decoded from, and whether it was read.
    crcs, read = np.zeros(len(paths), np.uint32), np.zeros(len(paths), bool)

    def rows(indices: np.ndarray) -> Iterator[np.ndarray]:
        tasks = (
            (tuple(paths[i] for i in indices[start : start + per_chunk]), shape, dtype.str, skip_bad, careful)
            for start in range(0, len(indices), per_chunk)
        )
        # pool.map is iterated, not kept in a variable, so that a Redo raised here closes it at once: its scratch file
        # is removed before anything renames the folder it lies in.
        for k, (chunk, failures, fits, chunk_crcs, chunk_read) in enumerate(
            pool.map(_decode, tasks, per_chunk * math.prod(shape) * dtype.itemsize)
        ):
            if not fits:
                raise Redo({})
            crcs[indices[k * per_chunk : (k + 1) * per_chunk]] = chunk_crcs
            read[indices[k * per_chunk : (k + 1) * per_chunk]] = chunk_read
            bad.update(failures)
            if not bad:  # once an image failed, the split is drawn again without it: nothing more is written
                yield chunk

    def finish() -> None:
        if bad:
            raise Redo({**exclude, **bad})

    return {"rows": rows, "finish": finish, "crc32s": _crc32s(paths, crcs, read)}


def _crc32s(paths: list[str], crcs: np.ndarray, read: np.ndarray):
    """A plan's ``crc32s``: of the files ``wanted``, the CRC-32 of each of ``paths`` (those of ``wanted`` left in, in
    the same order) whose bytes were ``read``, else None."""

    def crc32s(wanted: list[str]) -> list[str | None]:
        found, k = [], 0
        for path in wanted:
            if k < len(paths) and paths[k] == path:
                found.append(crc32_text(int(crcs[k])) if read[k] else None)
                k += 1
            else:
                found.append(None)
        return found

    return crc32s


def _ragged_decoding(
    paths: list[str],
    sizes: np.ndarray,
    channels: int,
    dtype: np.dtype,
    skip_bad: bool,
    pool: Pool,
    exclude: dict[str, str],
) -> dict:
    """A ragged plan's ``rows`` (lists of (channels, height, width) images at the ``sizes`` of their headers),
    ``finish`` and ``crc32s``: the images decoded by the pool a chunk of at most IMAGES_PER_CHUNK images and (but for
    one larger image) CHUNK_BYTES at a time, handed back flat. As :func:`_decoding`'s careful way, the images
    unreadable under ``skip_bad`` are gathered and raise one :class:`Redo` once all are known, and no row is written
    from the first of them on."""
    nbytes = channels * sizes[:, 0] * sizes[:, 1] * dtype.itemsize  # by source index, as the headers say
    bad = {}
    crcs, read = np.zeros(len(paths), np.uint32), np.zeros(len(paths), bool)

    def rows(indices: np.ndarray) -> Iterator[list[np.ndarray]]:
        bounds, start, total = [], 0, 0
        for k, size in enumerate(nbytes[indices].tolist()):
            if k > start and (k - start == IMAGES_PER_CHUNK or total + size > CHUNK_BYTES):
                bounds.append((start, k))
                start, total = k, 0
            total += size
        bounds.append((start, len(indices)))
        chunks = [indices[start:stop] for start, stop in bounds]
        tasks = (([paths[i] for i in chunk], sizes[chunk].tolist(), channels, dtype.str, skip_bad) for chunk in chunks)
        most = max(int(nbytes[chunk].sum()) for chunk in chunks)
        for k, (flat, failures, chunk_crcs, chunk_read) in enumerate(pool.map(_decode_ragged, tasks, most)):
            crcs[chunks[k]], read[chunks[k]] = chunk_crcs, chunk_read
            bad.update(failures)
            if not bad:  # once an image failed, the split is drawn again without it: nothing more is written
                ends = np.cumsum(nbytes[chunks[k]] // dtype.itemsize)
                yield [
                    flat[end - height * width * channels : end].reshape(channels, height, width)
                    for end, (height, width) in zip(ends.tolist(), sizes[chunks[k]].tolist())
                ]

    def finish() -> None:
        if bad:
            raise Redo({**exclude, **bad})

    return {"rows": rows, "finish": finish, "crc32s": _crc32s(paths, crcs, read)}


def _headers(paths: list[str], skip_bad: bool, pool: Pool, progress: bool) -> list:
    """Each image's ((width, height), mode), or under ``skip_bad`` the reason it cannot be read."""
    tasks = (
        (tuple(paths[start : start + HEADERS_PER_CHUNK]), skip_bad) for start in range(0, len(paths), HEADERS_PER_CHUNK)
    )
    headers = []
    bar = progress_bar(len(paths), "reading headers", "img", progress)
    try:
        for chunk in pool.map(_read_headers, tasks):
            headers += chunk
            bar.update(len(chunk))
    finally:
        bar.close()
    return headers


def _read_headers(task) -> list:
    """Worker: the headers of a chunk of images (:func:`aekit.data.images.header`)."""
    paths, skip_bad = task
    out = []
    for path in paths:
        try:
            out.append(images.header(Path(path)))
        except DataError as error:
            if not skip_bad:
                raise
            out.append(_reason(error))
    return out


def _decode(task) -> tuple[np.ndarray, dict[str, str], bool, np.ndarray, np.ndarray]:
    """Worker: a chunk of images as (n, channels, height, width) in the store's type, decoded by
    :func:`aekit.data.images.decoded` (8-bit pixels as they are); under ``skip_bad`` the reason of each image that
    could not be decoded, by path (its row left zero); whether each image fit; and the CRC-32 of each file's bytes
    (listing.json's) and whether they were read. Not ``careful`` (the layout was guessed), the chunk stops at the
    first image that does not fit or cannot be read."""
    paths, shape, dtype, skip_bad, careful = task
    out = np.zeros((len(paths), *shape), np.dtype(dtype))
    bad = {}
    crcs, read = np.zeros(len(paths), np.uint32), np.zeros(len(paths), bool)
    for i, path in enumerate(paths):
        try:
            data = images.image_bytes(path)
            crcs[i], read[i] = zlib.crc32(data), True
            pixels = _fitting(path, data, shape, out.dtype)
        except DataError as error:
            if not careful:
                return out, bad, False, crcs, read
            if not skip_bad:
                raise
            bad[path] = _reason(error)
            continue
        if pixels.dtype == out.dtype:
            out[i] = pixels
        else:  # 8-bit and 16-bit images in one folder: the store is float32, in [0, 1]
            out[i] = pixels / 255
    return out, bad, True, crcs, read


def _fitting(path: str, data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The pixels of the image ``path`` (its bytes ``data``) as :func:`aekit.data.images.decoded` gives them, refused
    in one line where they are not of ``shape`` or do not fit ``dtype``, as the header said."""
    pixels = images.decoded(path, shape[0], data)
    if pixels.shape != tuple(shape) or not np.can_cast(pixels.dtype, dtype):
        raise DataError(
            f"{path} decodes to {_kind(pixels.shape, pixels.dtype)} but its header said "
            f"{_kind(shape, dtype)} (forged or damaged, or changed while packing); delete or replace it"
        )
    return pixels


def _decode_ragged(task) -> tuple[np.ndarray, dict[str, str], np.ndarray, np.ndarray]:
    """Worker: a chunk of images at their own sizes ((height, width) each, as their headers said), in the store's
    type, one after the other in one flat array (8-bit pixels as they are, or as float32 in [0, 1] as the folder's
    training reads them where the store is float32); under ``skip_bad`` the reason of each image that could not be
    decoded, by path (its values left zero); the CRC-32 of each file's bytes and whether they were read."""
    paths, sizes, channels, dtype, skip_bad = task
    dtype = np.dtype(dtype)
    out = np.zeros(channels * sum(height * width for height, width in sizes), dtype)
    bad, start = {}, 0
    crcs, read = np.zeros(len(paths), np.uint32), np.zeros(len(paths), bool)
    for i, (path, (height, width)) in enumerate(zip(paths, sizes)):
        shape, start = (channels, height, width), start + channels * height * width
        try:
            data = images.image_bytes(path)
            crcs[i], read[i] = zlib.crc32(data), True
            pixels = _fitting(path, data, shape, dtype)
        except DataError as error:
            if not skip_bad:
                raise
            bad[path] = _reason(error)
            continue
        out[start - pixels.size : start] = (pixels if pixels.dtype == dtype else as_float32(pixels)).ravel()
    return out, bad, crcs, read


def _kind(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """Decoded pixels described: "WxH pixels, C channels of B bits" (16-bit images decode to float32)."""
    return f"{shape[2]}x{shape[1]} pixels, {shape[0]} channels of {8 if dtype == np.uint8 else 16} bits"


def _reason(error: DataError) -> str:
    """The reason inside a reader's one-line error ("FILE cannot be read as an image (REASON); fix")."""
    text = str(error)
    start, end = text.find(" ("), text.rfind("); ")
    return text[start + 2 : end] if 0 <= start < end else text
