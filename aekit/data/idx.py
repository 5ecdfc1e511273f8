"""The IDX format of the MNIST files: a 4-byte magic, big-endian uint32 dimensions, then the raw values.

Magic: two zero bytes, a type code (see ``IDX_CODES``) and the number of dimensions.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from aekit.data.dataset import Dataset
from aekit.errors import DataError

# NumPy 1.x arrays have at most 32 dimensions (2.x: 64); a header claiming more is damaged.
MAX_DIMS = 32

# The most bytes one compressed byte can inflate to. A deflate match copies at most 258 bytes and costs at least two
# bits (a one-bit length code and a one-bit distance code), so n compressed bytes inflate to at most 8n / 2 * 258 =
# 1032n bytes (the 1032:1 of zlib's technical details, https://zlib.net/zlib_tech.html); gzip's own header and
# trailer only lower that. A header promising more than this times the compressed size is a lie.
MAX_DEFLATE_RATIO = 1032
# Bytes asked of the decompressor at a time, so no request is ever the size a header claims.
CHUNK_SIZE = 1 << 20

# The endings of an IDX file's name: MNIST's ("-ubyte") or ".idx", either gzipped.
_IDX_ENDINGS = (".idx", "-ubyte", ".idx.gz", "-ubyte.gz")

# IDX type code -> element type; IDX stores every multi-byte value big-endian.
IDX_CODES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def is_idx(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(_IDX_ENDINGS)


def load_idx_file(path: str | Path, *, seed: int, test_fraction: float) -> Dataset:
    """A :class:`Dataset` of the examples of a single IDX file (the first dimension counts them; no labels), split
    with ``seed`` and ``test_fraction``, in the scale and layout of :func:`aekit.data.arrays.load_array_file`: 8-bit
    values are intensities (a plain file's memory-mapped), others real values."""
    from aekit.data.arrays import check_examples, existing_file, split_examples

    path = existing_file(path)
    x = map_idx_file(path)
    check_examples(x.shape, x.dtype, str(path))
    if x.dtype != np.uint8:  # other types are converted, so read (a memory map is kept for 8-bit values alone)
        x = np.array(x)
    return split_examples(path.name, x, None, str(path), seed=seed, test_fraction=test_fraction)


def read_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an IDX file into an array in native byte order; ``source`` names it in errors."""
    header_size, dims, dtype, expected_size = header_layout(data, source)
    count = math.prod(dims)
    check_size(source, expected_size, len(data))
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def check_size(source: str, expected_size: int, size: int) -> None:
    """Refuse a file of ``size`` bytes whose header promises ``expected_size``."""
    if size < expected_size:
        raise DataError(
            f"{source} is truncated: the header promises {expected_size} bytes but the file holds "
            f"{size}; delete it and download again"
        )
    if size > expected_size:
        raise DataError(
            f"{source} has {size - expected_size} trailing bytes after the {expected_size} its "
            "header promises; delete it and download again"
        )


def header_layout(data: bytes, source: str) -> tuple[int, tuple[int, ...], np.dtype, int]:
    """What the header at the start of ``data`` promises: its size, the dimensions, the element type and the size of
    the whole file; a damaged header is a DataError."""
    if len(data) < 4:
        raise DataError(
            f"{source} is truncated: it holds {len(data)} bytes, less than the 4-byte IDX magic; "
            "delete it and download again"
        )
    if data[:2] != b"\0\0":
        raise DataError(
            f"{source} is not an IDX file (it does not start with two zero bytes); delete it and download again"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_CODES:
        raise DataError(
            f"{source} has unknown IDX type code 0x{code:02X} (expected one of "
            f"{', '.join(f'0x{c:02X}' for c in IDX_CODES)}); delete it and download again"
        )
    if ndim > MAX_DIMS:
        raise DataError(
            f"{source} claims {ndim} dimensions, more than the {MAX_DIMS} an array can have; "
            "delete it and download again"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{source} is truncated: its header promises {ndim} dimensions ({header_size} bytes) "
            f"but the file holds {len(data)} bytes; delete it and download again"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_CODES[code]
    # Python integers, so a forged header cannot overflow the product; checked before anything is allocated.
    count = math.prod(dims)
    if count == 0:
        # Also spares NumPy a shape like (0, 2**32, 2**32), whose size it cannot compute.
        raise DataError(
            f"{source} holds no values (its header gives dimensions {'x'.join(map(str, dims))}); "
            "delete it and download again"
        )
    return header_size, dims, dtype, header_size + count * dtype.itemsize


def gunzip(data: bytes, source: str, limit: int | None = None) -> bytes:
    """Decompress gzip bytes; a corrupt or truncated stream is a DataError naming ``source``.

    With ``limit``, a stream that inflates to more than ``limit`` bytes is refused once that many are out, so a
    small file (a gzip bomb) cannot fill the memory.
    """
    inflated = _inflate(data, source, -1 if limit is None else limit + 1)
    if limit is not None and len(inflated) > limit:
        raise DataError(
            f"{source} decompresses to more than {limit} bytes, more than the file it should hold; "
            "delete it and download again"
        )
    return inflated


def _inflate(data: bytes, source: str, size: int) -> bytes:
    """The first ``size`` bytes (all with -1) that gzip ``data`` inflates to, asked for ``CHUNK_SIZE`` at a time:
    memory grows with what actually comes out, never with the size asked for."""
    chunks, total = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while size < 0 or total < size:
                chunk = stream.read(CHUNK_SIZE if size < 0 else min(CHUNK_SIZE, size - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{source} is not a valid gzip file ({error}); delete it and download again") from None
    return b"".join(chunks)


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The contents of a file, decompressed (to at most ``limit`` bytes, see :func:`gunzip`) when its name ends in
    ``.gz``."""
    path = Path(path)
    data = _read(path)
    return gunzip(data, str(path), limit) if path.suffix.lower() == ".gz" else data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}); check the path and its permissions") from None


def read_idx_file(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (decided by the ``.gz`` suffix), refusing a header that promises more than
    the file can hold before anything of that size is allocated.

    A plain file's size on disk must be the size its header promises, checked before the body is read. A gzipped
    file's header may promise at most ``MAX_DEFLATE_RATIO`` times its compressed size; it is then inflated in
    ``CHUNK_SIZE`` pieces and refused as soon as more comes out than promised, so a small file cannot fill the
    memory.
    """
    path = Path(path)
    source = str(path)
    if path.suffix.lower() == ".gz":
        data = _read(path)
        expected_size = header_layout(_inflate(data, source, 4 + 4 * MAX_DIMS), source)[3]
        if expected_size > MAX_DEFLATE_RATIO * len(data):
            raise DataError(
                f"{source} cannot hold what its header promises: {expected_size} bytes from "
                f"{len(data)} compressed bytes, more than deflate's maximum ratio of "
                f"{MAX_DEFLATE_RATIO}:1 allows; delete it and download again"
            )
        return read_idx(gunzip(data, source, expected_size), source)
    try:
        with path.open("rb") as file:
            expected_size = _plain_layout(file, source)[3]
            file.seek(0)
            data = file.read(expected_size + 1)  # one more, to notice a file that grew since
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}); check the path and its permissions") from None
    return read_idx(data, source)


def map_idx_file(path: str | Path) -> np.ndarray:
    """An IDX file's values without a copy of them in memory: a plain file memory-mapped (read-only, in the file's
    byte order) once its size is the size its header promises; a gzipped one inflated by :func:`read_idx_file`,
    with its checks, and held in its stored type."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        return read_idx_file(path)
    try:
        with path.open("rb") as file:
            header_size, dims, dtype, _ = _plain_layout(file, str(path))
            return np.memmap(file, dtype=dtype, mode="r", offset=header_size, shape=dims)
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}); check the path and its permissions") from None


def _plain_layout(file, source: str) -> tuple[int, tuple[int, ...], np.dtype, int]:
    """:func:`header_layout` of the plain IDX file open in ``file``, whose size on disk must be the size it
    promises."""
    size = os.fstat(file.fileno()).st_size
    layout = header_layout(file.read(4 + 4 * MAX_DIMS), source)
    check_size(source, layout[3], size)
    return layout
