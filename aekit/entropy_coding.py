"""Entropy coding under the probability tables of a factorized entropy model: the tables (:class:`Tables`: per code
dimension, 16-bit frequencies of a range of integers and of an escape for any other), built from a model's
probabilities (:func:`frequency_tables`) and told apart by their checksums, and coder 1 of :mod:`aekit.codec`'s
specification over them, constriction's range coder: a column of integers under a table (escaped values in two
16-bit halves), coded to 32-bit words and decoded from them. Where the words and checksums sit in a file is
:mod:`aekit.codec`'s.

Why constriction (0.5, checked against the alternatives on the registry): torchac 0.9.3 is a pure-Python wheel whose
arithmetic coder is C++ compiled with ninja at its first import (a compiler on every machine that decompresses);
range-coder 1.1 has binary wheels but writes to a file path, takes its frequency tables as Python lists and was last
built in 2023; constriction is Rust with binary wheels, codes numpy arrays in memory (ANS and range coders, one
model per array of symbols), and its fixed-point models are exactly invertible by construction.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np

from aekit.errors import DataError

PRECISION = 16  # the frequencies of the tables are out of 2^PRECISION
MAX_SUPPORT = 4096  # the most integers a table gives a symbol of its own (K), beside the escape


class Tables(NamedTuple):
    """The probability tables of a factorized entropy model, the same for every example: code dimension j codes the
    integers low[j] .. low[j] + K - 1 as the symbols 0 .. K - 1 and any other integer as the escape symbol K, symbol s
    with probability freq[j, s] / 2^16 (every frequency at least 1, each row summing to 2^16)."""

    low: np.ndarray  # int64 (d,)
    freq: np.ndarray  # int64 (d, K + 1)

    def checksum(self) -> int:
        """CRC-32 of d, K, the lows (int64) and the frequencies (uint32), little-endian."""
        d, width = self.freq.shape
        return zlib.crc32(
            struct.pack("<II", d, width - 1) + self.low.astype("<i8").tobytes() + self.freq.astype("<u4").tobytes()
        )


def tables_checksum(tables) -> int:
    """CRC-32 of the checksums of a sequence of :class:`Tables` (uint32 each, little-endian)."""
    return zlib.crc32(b"".join(struct.pack("<I", t.checksum()) for t in tables))


def frequency_tables(low: np.ndarray, probabilities: np.ndarray) -> Tables:
    """The :class:`Tables` of probabilities (d, K + 1) of the integers low[j] .. low[j] + K - 1 and of the escape
    (last), each row normalised: freq = floor(p (2^16 - K - 1)) + 1, every symbol at least 1 so that any integer can
    be coded, and the 2^16 - sum(freq) left over given to the likeliest symbol (so each row sums to 2^16)."""
    p = np.asarray(probabilities, dtype=np.float64)
    low = np.asarray(low, dtype=np.int64)
    if p.ndim != 2 or not 2 <= p.shape[1] <= MAX_SUPPORT + 1 or low.shape != (len(p),):
        raise DataError(f"probability tables of shape {p.shape} for lows of shape {low.shape} cannot be coded")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p.sum(1) > 0).all()):
        raise DataError("probability tables must hold finite non-negative numbers, each row some positive")
    total = 1 << PRECISION
    freq = np.floor(p / p.sum(1, keepdims=True) * (total - p.shape[1])).astype(np.int64) + 1
    freq[np.arange(len(freq)), freq.argmax(1)] += total - freq.sum(1)
    return Tables(low, freq)


def _categorical(freq: np.ndarray):
    """constriction's model of the symbols 0 .. len(freq) - 1 with probabilities freq / 2^16 (exact binary
    fractions, so that every machine builds the same fixed-point model)."""
    import constriction  # its modules are attributes of one compiled extension, not importable by name

    return constriction.stream.model.Categorical(freq / float(1 << PRECISION), perfect=False)


def _halves_model():
    import constriction

    return constriction.stream.model.Uniform(1 << 16)


# Escaped values are offset by 2^31 into [0, 2^32) and coded as two 16-bit halves.
_OFFSET = 1 << 31


def integer_codes(codes: np.ndarray, d: int) -> np.ndarray:
    """``codes`` checked as 2-D integers of d columns within what the coder takes, as int64."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype.kind not in "iu" or codes.shape[1] != d:
        raise DataError(f"codes of shape {codes.shape} and type {codes.dtype} must be 2-D integers, {d} a row")
    if codes.size and not (codes.min() >= -_OFFSET and codes.max() < _OFFSET):
        raise DataError(
            f"codes from {codes.min()} to {codes.max()} cannot be entropy-coded: values from -2^31 to 2^31 - 1 can"
        )
    return codes.astype(np.int64)


def range_encoder():
    """A new range encoder (constriction's queue: 32-bit words, 24-bit precision)."""
    import constriction

    return constriction.stream.queue.RangeEncoder()


def range_coded(codes: np.ndarray, tables: Tables, encoder=None) -> np.ndarray:
    """The range coder's words of int64 ``codes`` (m, d) under ``tables``: column j's m symbols (the value minus
    low_j, or the escape), then that column's escaped values in 16-bit halves (appended to ``encoder``'s, where
    given)."""
    encoder = range_encoder() if encoder is None else encoder
    for j in range(codes.shape[1]):
        _encode_column(encoder, codes[:, j], tables.freq[j], tables.low[j])
    return encoder.get_compressed()


def _encode_column(encoder, values: np.ndarray, freq: np.ndarray, low: int) -> None:
    """Code int64 ``values`` under one table (frequencies ``freq`` of the integers low .. low + K - 1 and the
    escape): each value's symbol, then the escaped values, each as value + 2^31 in two 16-bit halves."""
    local = values - low
    escaped = (local < 0) | (local >= len(freq) - 1)
    encoder.encode(np.where(escaped, len(freq) - 1, local).astype(np.int32), _categorical(freq))
    if escaped.any():
        offset = values[escaped] + _OFFSET
        encoder.encode(np.stack([offset >> 16, offset & 0xFFFF], 1).ravel().astype(np.int32), _halves_model())


def encode_indexed(encoder, values: np.ndarray, indices: np.ndarray, tables: tuple[Tables, ...]) -> None:
    """Code int64 ``values`` onto ``encoder``, value i under ``tables[indices[i]]`` (tables of one dimension): those
    of index 0 in their order, then those of index 1, ...; a DataError where an index has no table."""
    if indices.size and not (indices.min() >= 0 and indices.max() < len(tables)):
        raise DataError(f"scale indices from {indices.min()} to {indices.max()} have no table; 0 to {len(tables) - 1}")
    for index, table in enumerate(tables):
        if (chosen := indices == index).any():
            _encode_column(encoder, values[chosen], table.freq[0], table.low[0])


def range_decoder(words: np.ndarray):
    """A range decoder of the words (uint32) that a :func:`range_encoder` gave."""
    import constriction

    return constriction.stream.queue.RangeDecoder(words)


def _decode_column(decoder, n: int, freq: np.ndarray, low: int, source: str) -> np.ndarray:
    """The n int64 values that :func:`_encode_column` coded under the same table."""
    column = _decoded(decoder, _categorical(freq), n, source).astype(np.int64) + low
    escaped = column == low + len(freq) - 1
    if escaped.any():
        halves = _decoded(decoder, _halves_model(), 2 * int(escaped.sum()), source).astype(np.int64)
        column[escaped] = (halves[0::2] << 16 | halves[1::2]) - _OFFSET
    return column


def decode_columns(decoder, n: int, tables: Tables, source: str) -> list[np.ndarray]:
    """The d columns of n int64 values each that :func:`range_coded` coded under the same ``tables``."""
    return [_decode_column(decoder, n, tables.freq[j], tables.low[j], source) for j in range(len(tables.low))]


def decode_indexed(decoder, indices: np.ndarray, tables: tuple[Tables, ...], source: str) -> np.ndarray:
    """The int64 values, one per index of ``indices``, that :func:`encode_indexed` coded under the same tables."""
    values = np.zeros(indices.shape, np.int64)
    for index, table in enumerate(tables):
        if (chosen := indices == index).any():
            values[chosen] = _decode_column(decoder, int(chosen.sum()), table.freq[0], table.low[0], source)
    return values


def check_used_up(decoder, source: str) -> None:
    """A DataError naming ``source`` where its words hold more than its codes used."""
    if not decoder.maybe_exhausted():
        raise DataError(f"{source} holds coded words that its codes do not use; it is corrupted, compress again")


def _decoded(decoder, model, n: int, source: str) -> np.ndarray:
    """The next ``n`` symbols under ``model``; words that no symbols give (constriction's decoder asserts it) are a
    corrupted file."""
    try:
        return decoder.decode(model, n)
    except AssertionError:
        raise DataError(
            f"{source} holds coded words that no codes give under the run's tables; it is corrupted, compress again"
        ) from None


def check_coded_size(n: int, words: np.ndarray, tables: Tables, source: str) -> None:
    """Refuse n examples that ``words`` cannot hold, before their codes are allocated: an example costs at least
    b = sum_j -log2(max_s freq[j, s] / 2^16) bits (each value its dimension's likeliest symbol), and the coder's
    output is never shorter than the information it holds (twice its words are allowed, with two words to spare)."""
    least_bits = float(-np.log2(tables.freq.max(1) / (1 << PRECISION)).sum())
    room = 2 * 32 * (len(words) + 2)
    if n * least_bits > room:
        raise DataError(
            f"{source} claims {n} codes, more than its {len(words)} coded words can hold; it is corrupted, "
            "compress the images again"
        )
