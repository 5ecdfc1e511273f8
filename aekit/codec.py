"""The compressed-file format of ``aekit compress``: real codes quantized to B bits per dimension (version 1), a
codebook model's codeword indices stored losslessly (version 2), the integer codes of a model with an entropy model,
entropy-coded under its learned probabilities (version 3), or the integer code maps of a fully convolutional one,
images of any sizes, coded alike (version 4; version 5 keeps the images' names as well), or a scale hyperprior's two
codes of each image (version 6).

Each version is one layout; all integers are little-endian and all share the first 32 bytes:

    offset    size                 field
    0         4                    magic b"AEKC"
    4         2                    version, uint16: 1 (quantized codes), 2 (codeword indices), 3 (entropy-coded),
                                   4 (entropy-coded code maps), 5 (entropy-coded code maps with names) or 6
                                   (hyperprior code maps)
    6         1                    B, bits per stored value (1 to 16); in versions 3 to 6 the coder (1, below)
    7         1                    layout, uint8: how the examples were laid out when compressed, and are given
                                   back (:data:`LAYOUTS`): 0 as the model's examples, 1 flat rows (n, values), 2
                                   images without their channel axis (n, height, width), 3 channels last (n, height,
                                   width, channels). Reserved and 0 before aekit kept it: those files read as 0,
                                   and an older aekit reads a newer file as 0 (the model's layout) too
    8         16                   fingerprint of the model's weights (:func:`aekit.training.run_folder.fingerprint`)
    24        4                    n, examples (images in versions 4 and 5), uint32
    28        4                    d, values per example, uint32: code dimensions (1, 3), indices (2) or the code
                                   map's channels (4 to 6)

Version 1, quantized codes:

    32        4d                   low of each dimension, float32
    32+4d     4d                   high of each dimension, float32
    32+8d     ceil(n d B / 8)      payload: the n x d quantized values
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

Quantization is uniform between each dimension's low and high (the minimum and maximum of that dimension over the
n codes): q = round((z - low) / (high - low) * (2^B - 1)), restored as z' = low + q (high - low) / (2^B - 1); a
dimension with high = low stores q = 0. The error per value is at most (high - low) / (2 (2^B - 1)).

Version 2, codeword indices (a model with a codebook of K codewords, e.g. the VQ-VAE):

    32        4                    K, the codebook's size, uint32 (2 to 65536)
    36        ceil(n d B / 8)      payload: the n x d indices, each in [0, K), B = ceil(log2 K) bits each
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

Nothing is lost: the indices are the code (the decoder's input is their codewords), so decompressing gives exactly
the model's reconstruction. K = 256 stores a byte per index.

Both payloads hold their values row by row, B bits each, most significant bit first, the last byte padded with
zero bits.

Version 3, entropy-coded integer codes (a model with an entropy model, e.g. the rate-distortion auto-encoder):

    32        4                    CRC-32 of the probability tables the coder used (:meth:`Tables.checksum`), uint32
    36        4                    w, 32-bit words of coded data, uint32
    40        4w                   payload: the coder's words, uint32
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

The tables are not in the file: the model gives them (:class:`aekit.entropy_coding.Tables`: per code dimension j, the
integers low_j .. low_j + K - 1 and an escape symbol for any other integer, with frequencies out of 2^16), and their
checksum in the header makes sure the decoder codes under the very tables the encoder did. Coder 1, the only one, is
constriction's range coder (``constriction.stream.queue``, 32-bit words, 24-bit precision): it codes column by
column, for each dimension j the n symbols (the value minus low_j, or K for an escape) under a categorical model of
frequencies freq_j / 2^16, then the escaped values of that column, each as value + 2^31 in two uniform 16-bit halves
(high first). A value costs about -log2(freq_j(value) / 2^16) bits, so the bytes follow the content: an example whose
code the model finds likely takes fewer. The decoder must use up the words exactly.

Version 4, entropy-coded code maps (a fully convolutional model with an entropy model: ``--net fully-conv``), for
images of any sizes, each coded whole:

    32        4                    CRC-32 of the probability tables the coder used, uint32
    36        4                    w, 32-bit words of coded data, uint32
    40        16n                  per image: its height H and width W, its code map's height h and width w, uint32
                                   each (1 to 2^24; the model's h = ceil(H / 2^L), w = ceil(W / 2^L) is checked)
    40+16n    4w                   payload: the coder's words, uint32
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

Every position of every map (image by image, row by row) is a row of d values, one per channel, and the m = sum(h w)
rows are coded as version 3 codes its n: channel j's m symbols under table j, then its escapes. The file keeps no
names: decompressing gives the images in the order they were compressed (a folder's in sorted order).

Version 5, entropy-coded code maps with names: version 4 with each image's name (its path in the folder it was
compressed from) between the listing and the payload:

    40+16n    4                    N, bytes of the names, uint32
    44+16n    N                    per image: L, uint16, then its name in L bytes of UTF-8
    44+16n+N  4w                   payload: the coder's words, uint32

A name is a relative path with "/" between its parts, 1 to 1024 bytes, no part empty, "." or "..", no control
character or backslash, and no two names alike (:func:`name_problem`): decompressing writes each image under its
name, so a file cannot name a place outside the folder it is decompressed into.

Version 6, a scale hyperprior's code maps (``--model hyperprior``): per image, the hyper-code z (e channels, h' x w')
under the run's factorized prior, then the code map y (d channels, h x w) under a zero-mean Gaussian of each value's
scale, which the run computes from z alone, as an index into its fixed table of scales:

    32        4                    CRC-32 of the hyper-code's probability tables (:meth:`Tables.checksum`), uint32
    36        4                    CRC-32 of the scales' tables (:func:`aekit.entropy_coding.tables_checksum`), uint32
    40        4                    e, the hyper-code's channels, uint32
    44        4                    w, 32-bit words of coded data, uint32
    48        24n                  per image: H, W, h, w, h', w', uint32 each (1 to 2^24; the run's h, w and h', w'
                                   are checked)
    48+24n    4                    N, bytes of the names (0: the file keeps none), uint32
    52+24n    N                    per image: L, uint16, then its name in L bytes of UTF-8 (as version 5)
    52+24n+N  4w                   payload: the coder's words, uint32
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

The payload is one stream of coder 1, image by image: z's channel j (its h' w' values row by row) under table j of the
hyper-code's tables, for j = 0 .. e - 1; then the values of y whose scale index is k (in y's order: channel, row,
column) under scale table k, for k = 0, 1, ...; each table with its escape as version 3's. The decoder decodes z,
has the run compute the indices from it (in integer arithmetic, the same on every machine), then decodes y.

:func:`decode` reads every version and says which it read by the type it returns; version 3 and 4 payloads are
decoded by :func:`decode_entropy` under the model's tables (:func:`code_maps` splits version 4's rows into maps),
version 6's by :func:`decode_hyper`, image by image. The tables and coder 1 themselves are
:mod:`aekit.entropy_coding`'s; this module lays out their words and checksums in a file.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple

import numpy as np

from aekit import entropy_coding
from aekit.entropy_coding import Tables
from aekit.errors import DataError

MAGIC = b"AEKC"
# What the name of a compressed file ends in, so that it passes for nothing else (an array, an image).
COMPRESSED_SUFFIX = ".aekc"
# The versions: quantized codes, codeword indices, entropy-coded codes, entropy-coded code maps (with names).
QUANTIZED, INDICES, ENTROPY, MAPS, NAMED_MAPS, HYPER_MAPS = 1, 2, 3, 4, 5, 6
VERSIONS = {
    QUANTIZED: "quantized codes",
    INDICES: "codeword indices",
    ENTROPY: "entropy-coded codes",
    MAPS: "entropy-coded code maps",
    NAMED_MAPS: "entropy-coded code maps with names",
    HYPER_MAPS: "hyperprior code maps",
}
# How the examples of a file were laid out (header byte 7), as (n, ...) per example of the model's shape (c, h, w)
# or (values,): as it is, flattened, without the channel axis of one-channel images, or with the channels last.
AS_MODEL, FLAT, NO_CHANNEL, CHANNELS_LAST = 0, 1, 2, 3
LAYOUTS = {AS_MODEL: "as the model's", FLAT: "flat", NO_CHANNEL: "no channel axis", CHANNELS_LAST: "channels last"}
MAX_BITS = 16
MAX_CODEBOOK = 1 << MAX_BITS
RANGE_CODER = 1  # version 3's coder: constriction's range coder under the model's 16-bit frequency tables
MAX_SIDE = 1 << 24  # the most pixels a side of an image in a version 4 or 5 file
MAX_NAME = 1024  # the most bytes of UTF-8 an image's name in a version 5 file
_HEADER = struct.Struct("<4sHBB16sII")
_CODEBOOK = struct.Struct("<I")
_ENTROPY = struct.Struct("<II")  # the tables' checksum, the coded words
_MAP_SIZE = struct.Struct("<IIII")  # an image's height and width, its code map's height and width
_NAMES = struct.Struct("<I")  # the bytes of the names
_NAME = struct.Struct("<H")  # the bytes of a name
_HYPER = struct.Struct("<IIII")  # version 6: the two tables' checksums, the hyper-code's channels, the coded words
_HYPER_SIZE = struct.Struct("<IIIIII")  # version 6: an image's H and W, its code map's h and w, its hyper-code's
_CRC = struct.Struct("<I")


class Quantized(NamedTuple):
    """Codes quantized to ``bits`` bits: integers ``q`` (n, d) and each dimension's ``low`` and ``high``."""

    q: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bits: int
    layout: int = AS_MODEL

    def restore(self) -> np.ndarray:
        """The codes the integers stand for, float32 (n, d)."""
        step = (self.high.astype(np.float64) - self.low) / (2**self.bits - 1)
        return (self.low + self.q * step).astype(np.float32)


class Indices(NamedTuple):
    """Codeword indices, int64 (n, d), each in [0, ``codebook_size``), of examples laid out as ``layout`` said."""

    indices: np.ndarray
    codebook_size: int
    layout: int = AS_MODEL


class EntropyCoded(NamedTuple):
    """A version 3 to 5 file's coded words (uint32) for ``shape`` = (m, d) integer codes, coded under the tables
    whose checksum is ``tables_checksum``; :func:`decode_entropy` decodes them. Version 3: m examples of d values.
    Versions 4 and 5: ``sizes`` (n, 4) holds each image's height and width and its code map's h and w, and the m =
    sum(h w) rows are the maps' positions (image by image, row by row), each of d channels (:func:`code_maps` splits
    them); version 5 has the images' ``names`` too. ``layout``: the header's (:data:`LAYOUTS`)."""

    words: np.ndarray
    shape: tuple[int, int]
    tables_checksum: int
    sizes: np.ndarray | None = None
    names: list[str] | None = None
    layout: int = AS_MODEL


class HyperCoded(NamedTuple):
    """A version 6 file's coded words for ``shape`` = (n, d): n images whose code maps have d channels and hyper-codes
    ``channels``, coded under the tables whose checksums are ``tables_checksum`` (the hyper-code's) and
    ``scales_checksum``; ``sizes`` (n, 6) holds each image's H, W, h, w, h', w'; ``names`` the images' names or None.
    :func:`decode_hyper` decodes them."""

    words: np.ndarray
    shape: tuple[int, int]
    channels: int
    tables_checksum: int
    scales_checksum: int
    sizes: np.ndarray
    names: list[str] | None = None
    layout: int = AS_MODEL


def check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise DataError(f"--bits {bits} is out of range; use 1 to {MAX_BITS} bits per code value, e.g. 8")


def index_bits(codebook_size: int) -> int:
    """B = ceil(log2 K): the bits one index of a codebook of K codewords takes (K >= 2)."""
    return (codebook_size - 1).bit_length()


def quantize(codes: np.ndarray, bits: int) -> Quantized:
    """Uniform quantization of float codes (n, d) between each dimension's minimum and maximum."""
    check_bits(bits)
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or not np.isfinite(codes).all():
        raise DataError(f"codes of shape {codes.shape} cannot be quantized: they must be finite and 2-D")
    low, high = codes.min(0), codes.max(0)
    span = high.astype(np.float64) - low
    levels = 2**bits - 1
    scaled = np.divide(codes - low.astype(np.float64), span, out=np.zeros(codes.shape), where=span > 0)
    q = np.clip(np.round(scaled * levels), 0, levels).astype(np.uint16)
    return Quantized(q, low, high, bits)


def _packed(values: np.ndarray, bits: int) -> bytes:
    """Non-negative integers below 2^bits, ``bits`` bits each, most significant first, zero-padded to a byte."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((values.astype(np.uint32)[..., None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


def _unpacked(payload: np.ndarray, shape: tuple[int, int], bits: int) -> np.ndarray:
    """The integers of :func:`_packed`, uint32 of ``shape``."""
    bit_values = np.unpackbits(payload)[: shape[0] * shape[1] * bits].reshape(*shape, bits).astype(np.uint32)
    return (bit_values << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(-1, dtype=np.uint32)


def _with_crc(body: bytes) -> bytes:
    return body + _CRC.pack(zlib.crc32(body))


def _header(version: int, bits: int, layout: int, fingerprint: bytes, n: int, d: int) -> bytes:
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout} cannot be stored; one of {', '.join(map(str, LAYOUTS))} can")
    return _HEADER.pack(MAGIC, version, bits, layout, fingerprint, n, d)


def encode(quantized: Quantized, fingerprint: bytes, layout: int = AS_MODEL) -> bytes:
    """The bytes of a compressed file (version 1) holding ``quantized`` made by the model with ``fingerprint``, of
    examples laid out as ``layout`` says (:data:`LAYOUTS`; the same in every ``encode_*``)."""
    q, bits = quantized.q, quantized.bits
    n, d = q.shape
    return _with_crc(
        _header(QUANTIZED, bits, layout, fingerprint, n, d)
        + quantized.low.astype("<f4").tobytes()
        + quantized.high.astype("<f4").tobytes()
        + _packed(q, bits)
    )


def encode_indices(indices: np.ndarray, codebook_size: int, fingerprint: bytes, layout: int = AS_MODEL) -> bytes:
    """The bytes of a compressed file (version 2) holding the codeword ``indices`` (n, d), each in
    [0, ``codebook_size``), made by the model with ``fingerprint``: ceil(log2 codebook_size) bits an index."""
    if not 2 <= codebook_size <= MAX_CODEBOOK:
        raise DataError(f"a codebook of {codebook_size} codewords cannot be stored; 2 to {MAX_CODEBOOK} can")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise DataError(f"codeword indices of shape {indices.shape} and type {indices.dtype} must be 2-D integers")
    if indices.size and not (indices.min() >= 0 and indices.max() < codebook_size):
        raise DataError(
            f"codeword indices from {indices.min()} to {indices.max()} do not fit a codebook of {codebook_size}"
        )
    bits = index_bits(codebook_size)
    n, d = indices.shape
    header = _header(INDICES, bits, layout, fingerprint, n, d) + _CODEBOOK.pack(codebook_size)
    return _with_crc(header + _packed(indices, bits))


def encode_entropy(codes: np.ndarray, tables: Tables, fingerprint: bytes, layout: int = AS_MODEL) -> bytes:
    """The bytes of a compressed file (version 3) holding the integer ``codes`` (n, d), entropy-coded column by
    column under ``tables`` (coder 1: see the module's docstring), made by the model with ``fingerprint``."""
    codes = entropy_coding.integer_codes(codes, len(tables.low))
    words = entropy_coding.range_coded(codes, tables)
    header = _header(ENTROPY, RANGE_CODER, layout, fingerprint, len(codes), codes.shape[1])
    return _with_crc(header + _ENTROPY.pack(tables.checksum(), len(words)) + words.astype("<u4").tobytes())


def encode_maps(
    maps: list[np.ndarray],
    image_sizes: list[tuple[int, int]],
    tables: Tables,
    fingerprint: bytes,
    names: list[str] | None = None,
    layout: int = AS_MODEL,
) -> bytes:
    """The bytes of a compressed file (version 4, or 5 with the images' ``names``) holding integer code maps, one
    (d, h, w) per image (each its own h and w), the images' heights and widths ``image_sizes``: every position of
    every map a row of d values, coded column by column under ``tables`` as version 3 codes its rows."""
    d = len(tables.low)
    named = b"" if names is None else _names_bytes(names, len(maps))
    if len(maps) != len(image_sizes) or any(np.ndim(m) != 3 or np.shape(m)[0] != d for m in maps):
        raise DataError(f"code maps must be (channels, h, w) arrays of {d} channels, one per image size given")
    rows = [np.asarray(m).reshape(d, -1).T for m in maps]
    codes = entropy_coding.integer_codes(np.concatenate(rows) if rows else np.zeros((0, d), np.int64), d)
    sizes = [(*size, *np.shape(m)[1:]) for size, m in zip(image_sizes, maps)]
    if any(not 0 < v <= MAX_SIDE for size in sizes for v in size):
        raise DataError(f"images and code maps of {sizes} pixels cannot be stored: 1 to {MAX_SIDE} a side can")
    words = entropy_coding.range_coded(codes, tables)
    header = _header(MAPS if names is None else NAMED_MAPS, RANGE_CODER, layout, fingerprint, len(maps), d)
    listing = b"".join(_MAP_SIZE.pack(*map(int, size)) for size in sizes)
    if names is not None:
        listing += _NAMES.pack(len(named)) + named
    return _with_crc(header + _ENTROPY.pack(tables.checksum(), len(words)) + listing + words.astype("<u4").tobytes())


def encode_hyper_maps(
    codes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    image_sizes: list[tuple[int, int]],
    tables: Tables,
    scales: tuple[Tables, ...],
    fingerprint: bytes,
    names: list[str] | None = None,
    layout: int = AS_MODEL,
) -> bytes:
    """The bytes of a compressed file (version 6) holding, per image of ``image_sizes``, its integer hyper-code z
    (e, h', w'), its integer code map y (d, h, w) and y's scale indices (d, h, w), each in [0, len(scales)): z coded
    under ``tables``, y under ``scales`` (see the module's docstring)."""
    e, d = len(tables.low), (np.shape(codes[0][1])[0] if codes else 0)
    named = b"" if names is None else _names_bytes(names, len(codes))
    shapes_fit = all(
        np.ndim(z) == 3
        and np.shape(z)[0] == e
        and np.ndim(y) == 3
        and np.shape(y)[0] == d
        and np.shape(k) == np.shape(y)
        for z, y, k in codes
    )
    if len(codes) != len(image_sizes) or not shapes_fit:
        raise DataError(f"hyper-codes of {e} channels, code maps of {d} and their indices must come one per image")
    sizes = [(*size, *np.shape(y)[1:], *np.shape(z)[1:]) for size, (z, y, _) in zip(image_sizes, codes)]
    if any(not 0 < v <= MAX_SIDE for size in sizes for v in size):
        raise DataError(f"images and code maps of {sizes} pixels cannot be stored: 1 to {MAX_SIDE} a side can")
    encoder = entropy_coding.range_encoder()
    for z, y, k in codes:
        entropy_coding.range_coded(entropy_coding.integer_codes(np.reshape(z, (e, -1)).T, e), tables, encoder)
        values = entropy_coding.integer_codes(np.reshape(y, (1, -1)), np.size(y))[0]
        entropy_coding.encode_indexed(encoder, values, np.ravel(k), scales)
    words = encoder.get_compressed()
    header = _header(HYPER_MAPS, RANGE_CODER, layout, fingerprint, len(codes), d)
    listing = b"".join(_HYPER_SIZE.pack(*map(int, size)) for size in sizes) + _NAMES.pack(len(named)) + named
    checksums = _HYPER.pack(tables.checksum(), entropy_coding.tables_checksum(scales), e, len(words))
    return _with_crc(header + checksums + listing + words.astype("<u4").tobytes())


def name_problem(name: str) -> str | None:
    """What keeps ``name`` from being an image's name in a version 5 file (see the module's docstring), or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_NAME:
        return f"is {size} bytes long (1 to {MAX_NAME} bytes of UTF-8 can be stored)"
    if any(ord(c) < 32 or c in "\\\x7f" or 0xD800 <= ord(c) < 0xE000 for c in name):
        return "holds a control character, a backslash or an unpaired surrogate"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "is not a relative path of named parts ('/' at an end, '//', '.' or '..')"
    return None


def check_names(names: list[str]) -> None:
    """A DataError unless every name can be an image's name in a version 5 file and no two are alike."""
    for name in names:
        if (problem := name_problem(name)) is not None:
            raise DataError(f"the image name {name!r} {problem}; rename the file")
    if len(set(names)) != len(names):
        raise DataError("two images have the same name; give each image a name of its own")


def _names_bytes(names: list[str], n: int) -> bytes:
    """The names block of a version 5 file: each name's length (uint16) and UTF-8 bytes."""
    if len(names) != n:
        raise DataError(f"{len(names)} names given for {n} images; give one name an image")
    check_names(names)
    return b"".join(_NAME.pack(len(data := name.encode())) + data for name in names)


def _names(block: bytes, n: int, source: str) -> list[str]:
    """The n names of a version 5 file's names block, each checked (:func:`name_problem`), all of it used."""
    names, offset = [], 0
    for _ in range(n):
        if offset + _NAME.size > len(block):
            break
        (size,) = _NAME.unpack_from(block, offset)
        try:
            name = block[offset + _NAME.size : offset + _NAME.size + size].decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{source} lists an image name that is not UTF-8; it is corrupted") from None
        offset += _NAME.size + size
        if offset > len(block) or (problem := name_problem(name)) is not None:
            shown = f" {name!r} {problem}" if offset <= len(block) else "s past the end of their block"
            raise DataError(f"{source} lists the image name{shown}; it is corrupted, compress the images again")
        names.append(name)
    if len(names) != n or offset != len(block) or len(set(names)) != n:
        raise DataError(
            f"{source} lists names for {len(names)} of {n} images in {offset} of {len(block)} bytes, or two alike; "
            "it is corrupted, compress the images again"
        )
    return names


def code_maps(codes: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """The code maps (d, h, w), one per image, of the rows (m, d) that :func:`decode_entropy` gives a version 4
    file, split by its ``sizes``."""
    ends = np.cumsum(sizes[:, 2] * sizes[:, 3])
    return [block.T.reshape(-1, int(h), int(w)) for block, (_, _, h, w) in zip(np.split(codes, ends[:-1]), sizes)]


def decode_entropy(coded: EntropyCoded, tables: Tables, source: str) -> np.ndarray:
    """The integer codes, int64 (m, d), of a version 3 or 4 file, decoded under ``tables``, which must be the ones
    it was coded under (their checksum is in the header). A file whose words are too few for its m rows, or that
    holds words its codes do not use up, is corrupted: a DataError naming ``source``."""
    n, d = coded.shape
    if d != len(tables.low):
        raise DataError(
            f"{source} holds codes of {d} dimensions but the run's have {len(tables.low)}; it is corrupted, "
            "compress the images again"
        )
    if coded.tables_checksum != tables.checksum():
        raise DataError(
            f"{source} was coded under other probability tables than the run's entropy model gives here (their "
            "checksums differ): it is corrupted, or this machine computes the run's tables differently; compress the "
            "images again here"
        )
    entropy_coding.check_coded_size(n, coded.words, tables, source)
    decoder = entropy_coding.range_decoder(coded.words)
    columns = entropy_coding.decode_columns(decoder, n, tables, source)
    entropy_coding.check_used_up(decoder, source)
    return np.stack(columns, 1) if d else np.zeros((n, 0), np.int64)


def decode_hyper(coded: HyperCoded, tables: Tables, scales: tuple[Tables, ...], indices_of, source: str):
    """The integer code map y (d, h, w), int64, of each image of a version 6 file, one at a time: its hyper-code
    decoded under ``tables``, then y under ``scales``, by the indices ``indices_of(z, h, w)`` gives (the tables and
    the function must be the ones it was coded with). A DataError naming ``source`` where they are not, or where the
    words do not decode to the codes, or are not used up."""
    d, e = coded.shape[1], len(tables.low)
    if coded.channels != e:
        raise DataError(
            f"{source} holds hyper-codes of {coded.channels} channels but the run's have {e}; it is corrupted, "
            "compress the images again"
        )
    if (coded.tables_checksum, coded.scales_checksum) != (tables.checksum(), entropy_coding.tables_checksum(scales)):
        raise DataError(
            f"{source} was coded under other probability tables than the run gives here (their checksums differ): "
            "it is corrupted, or this machine computes the run's tables differently; compress the images again here"
        )
    entropy_coding.check_coded_size(int((coded.sizes[:, 4] * coded.sizes[:, 5]).sum()), coded.words, tables, source)
    decoder = entropy_coding.range_decoder(coded.words)
    for _, _, h, w, hz, wz in coded.sizes.tolist():
        z = np.stack(entropy_coding.decode_columns(decoder, hz * wz, tables, source))
        indices = np.ravel(indices_of(z.reshape(e, hz, wz), h, w))
        yield entropy_coding.decode_indexed(decoder, indices, scales, source).reshape(d, h, w)
    entropy_coding.check_used_up(decoder, source)


def decode(data: bytes, source: str) -> tuple[Quantized | Indices | EntropyCoded | HyperCoded, bytes]:
    """What a compressed file holds, and the fingerprint of the model that made it: :class:`Quantized` codes
    (version 1), codeword :class:`Indices` (version 2), :class:`EntropyCoded` codes (versions 3 to 5) or
    :class:`HyperCoded` ones (version 6), each with the examples' ``layout``.

    Every malformed file is a DataError naming ``source``: too short, not this format, another version, a size
    other than its header promises, a checksum that does not match, or impossible header values or indices.
    """
    if len(data) < _HEADER.size + _CRC.size:
        raise DataError(
            f"{source} is truncated: {len(data)} bytes, fewer than the {_HEADER.size + _CRC.size} of "
            "an empty aekit compressed file; compress the images again"
        )
    magic, version, bits, layout, fingerprint, n, d = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DataError(
            f"{source} is not an aekit compressed file (it does not start with {MAGIC!r}); give a file "
            "written by `aekit compress`"
        )
    if version not in VERSIONS:
        known = [f"{v} ({what})" for v, what in VERSIONS.items()]
        known = ", ".join(known[:-1]) + " and " + known[-1]
        raise DataError(
            f"{source} is a version {version} aekit compressed file and this aekit reads versions {known}; "
            "decompress it with the aekit that wrote it"
        )
    if version == HYPER_MAPS:
        stored = _hyper_coded(data, source, bits, (n, d))
    elif version in (ENTROPY, MAPS, NAMED_MAPS):
        stored = _entropy_coded(data, source, bits, (n, d), version)
    else:
        extra = 8 * d if version == QUANTIZED else _CODEBOOK.size
        _check_size_and_crc(data, source, _HEADER.size + extra + math.ceil(n * d * bits / 8) + _CRC.size)
        if not 1 <= bits <= MAX_BITS:
            raise DataError(f"{source} claims {bits} bits per value (1 to {MAX_BITS} are possible); it is corrupted")
        stored = (_quantized if version == QUANTIZED else _indices)(data, source, bits, (n, d))
    if layout not in LAYOUTS:
        raise DataError(
            f"{source} claims layout {layout} for its examples ({', '.join(map(str, LAYOUTS))} are possible); it is "
            "corrupted, compress the examples again"
        )
    return stored._replace(layout=layout), fingerprint


def _check_size_and_crc(data: bytes, source: str, expected: int) -> None:
    if len(data) < expected:
        raise DataError(
            f"{source} is truncated: its header promises {expected} bytes but it holds {len(data)}; "
            "compress the images again"
        )
    if len(data) > expected:
        raise DataError(
            f"{source} has {len(data) - expected} bytes after the {expected} its header promises; it "
            "is corrupted, compress the images again"
        )
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise DataError(
            f"{source} is corrupted (its CRC-32 checksum does not match its contents); compress the images again"
        )


def _payload(data: bytes, offset: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8, len(data) - _CRC.size - offset, offset)


def _quantized(data: bytes, source: str, bits: int, shape: tuple[int, int]) -> Quantized:
    """The quantized codes of a version 1 file whose size, checksum and bits are checked."""
    offset, d = _HEADER.size, shape[1]
    low = np.frombuffer(data, "<f4", d, offset).astype(np.float32)
    high = np.frombuffer(data, "<f4", d, offset + 4 * d).astype(np.float32)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
        raise DataError(f"{source} holds quantization ranges that are not finite intervals; it is corrupted")
    q = _unpacked(_payload(data, offset + 8 * d), shape, bits).astype(np.uint16)
    return Quantized(q, low, high, bits)


def _indices(data: bytes, source: str, bits: int, shape: tuple[int, int]) -> Indices:
    """The codeword indices of a version 2 file whose size, checksum and bits are checked."""
    (codebook_size,) = _CODEBOOK.unpack_from(data, _HEADER.size)
    if not 2 <= codebook_size <= MAX_CODEBOOK or index_bits(codebook_size) != bits:
        raise DataError(
            f"{source} claims a codebook of {codebook_size} codewords stored at {bits} bits an index (2 to "
            f"{MAX_CODEBOOK} codewords at ceil(log2) bits are possible); it is corrupted"
        )
    indices = _unpacked(_payload(data, _HEADER.size + _CODEBOOK.size), shape, bits).astype(np.int64)
    if indices.size and indices.max() >= codebook_size:
        raise DataError(
            f"{source} holds index {indices.max()} of a codebook of {codebook_size} codewords; it is corrupted"
        )
    return Indices(indices, codebook_size)


def _entropy_coded(data: bytes, source: str, coder: int, shape: tuple[int, int], version: int) -> EntropyCoded:
    """The coded words of a version 3 file (4: with its listing of sizes; 5: and of names), its size, checksum and
    coder checked."""
    maps = version in (MAPS, NAMED_MAPS)
    listing = _MAP_SIZE.size * shape[0] if maps else 0
    empty = _HEADER.size + _ENTROPY.size + _CRC.size
    checksum, words = _ENTROPY.unpack_from(data, _HEADER.size) if len(data) >= empty else (0, 0)
    names_size = 0  # version 5: the bytes of the names block, after its own length
    if version == NAMED_MAPS:
        at = _HEADER.size + _ENTROPY.size + listing
        names_size = _NAMES.unpack_from(data, at)[0] if len(data) >= at + _NAMES.size + _CRC.size else 0
        listing += _NAMES.size + names_size
    _check_size_and_crc(data, source, empty + listing + 4 * words)
    _check_coder(coder, source)
    start = _HEADER.size + _ENTROPY.size
    coded = np.frombuffer(data, "<u4", words, start + listing).astype(np.uint32)
    if not maps:
        return EntropyCoded(coded, shape, checksum)
    sizes = np.frombuffer(data, "<u4", 4 * shape[0], start).astype(np.int64).reshape(-1, 4)
    _check_sides(sizes, source)
    names = None
    if version == NAMED_MAPS:
        names = _names(data[start + listing - names_size : start + listing], shape[0], source)
    return EntropyCoded(coded, (sum((sizes[:, 2] * sizes[:, 3]).tolist()), shape[1]), checksum, sizes, names)


def _hyper_coded(data: bytes, source: str, coder: int, shape: tuple[int, int]) -> HyperCoded:
    """The coded words of a version 6 file, with its listing of sizes and names, its size, checksum and coder
    checked."""
    listing = _HYPER_SIZE.size * shape[0]
    start = _HEADER.size + _HYPER.size
    fields = _HYPER.unpack_from(data, _HEADER.size) if len(data) >= start + _CRC.size else (0, 0, 0, 0)
    at = start + listing
    names_size = _NAMES.unpack_from(data, at)[0] if len(data) >= at + _NAMES.size + _CRC.size else 0
    _check_size_and_crc(data, source, at + _NAMES.size + names_size + 4 * fields[3] + _CRC.size)
    _check_coder(coder, source)
    sizes = np.frombuffer(data, "<u4", 6 * shape[0], start).astype(np.int64).reshape(-1, 6)
    _check_sides(sizes, source)
    names = _names(data[at + _NAMES.size : at + _NAMES.size + names_size], shape[0], source) if names_size else None
    words = np.frombuffer(data, "<u4", fields[3], at + _NAMES.size + names_size).astype(np.uint32)
    return HyperCoded(words, shape, fields[2], fields[0], fields[1], sizes, names)


def _check_coder(coder: int, source: str) -> None:
    if coder != RANGE_CODER:
        raise DataError(
            f"{source} was written by coder {coder} and this aekit has coder {RANGE_CODER} (constriction's range "
            "coder); it is corrupted, or decompress it with the aekit that wrote it"
        )


def _check_sides(sizes: np.ndarray, source: str) -> None:
    if not ((sizes > 0) & (sizes <= MAX_SIDE)).all():
        raise DataError(
            f"{source} lists an image or code map of no pixels or more than {MAX_SIDE} a side; it is corrupted, "
            "compress the images again"
        )
