"""The compressed-file format of ``aekit compress``: codes quantized to B bits per dimension.

Version 1, all integers little-endian:

    offset    size                 field
    0         4                    magic b"AEKC"
    4         2                    version, uint16 (1)
    6         1                    B, bits per code value (1 to 16)
    7         1                    reserved, 0
    8         16                   fingerprint of the model's weights (:func:`aekit.runs.fingerprint`)
    24        4                    n, examples, uint32
    28        4                    d, code dimensions, uint32
    32        4d                   low of each dimension, float32
    32+4d     4d                   high of each dimension, float32
    32+8d     ceil(n d B / 8)      payload: the n x d quantized values row by row, B bits each, most significant
                                   bit first, the last byte padded with zero bits
    end-4     4                    CRC-32 (zlib.crc32) of every byte before it, uint32

Quantization is uniform between each dimension's low and high (the minimum and maximum of that dimension over the
n codes): q = round((z - low) / (high - low) * (2^B - 1)), restored as z' = low + q (high - low) / (2^B - 1); a
dimension with high = low stores q = 0. The error per value is at most (high - low) / (2 (2^B - 1)).
"""
from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple

import numpy as np

from aekit.errors import DataError

MAGIC = b"AEKC"
VERSION = 1
MAX_BITS = 16
_HEADER = struct.Struct("<4sHBB16sII")
_CRC = struct.Struct("<I")


class Quantized(NamedTuple):
    """Codes quantized to ``bits`` bits: integers ``q`` (n, d) and each dimension's ``low`` and ``high``."""

    q: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bits: int

    def restore(self) -> np.ndarray:
        """The codes the integers stand for, float32 (n, d)."""
        step = (self.high.astype(np.float64) - self.low) / (2 ** self.bits - 1)
        return (self.low + self.q * step).astype(np.float32)


def check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise DataError(f"--bits {bits} is out of range; use 1 to {MAX_BITS} bits per code value, e.g. 8")


def quantize(codes: np.ndarray, bits: int) -> Quantized:
    """Uniform quantization of float codes (n, d) between each dimension's minimum and maximum."""
    check_bits(bits)
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or not np.isfinite(codes).all():
        raise DataError(f"codes of shape {codes.shape} cannot be quantized: they must be finite and 2-D")
    low, high = codes.min(0), codes.max(0)
    span = (high.astype(np.float64) - low)
    levels = 2 ** bits - 1
    scaled = np.divide(codes - low.astype(np.float64), span, out=np.zeros(codes.shape), where=span > 0)
    q = np.clip(np.round(scaled * levels), 0, levels).astype(np.uint16)
    return Quantized(q, low, high, bits)


def encode(quantized: Quantized, fingerprint: bytes) -> bytes:
    """The bytes of a compressed file holding ``quantized`` made by the model with ``fingerprint``."""
    q, bits = quantized.q, quantized.bits
    n, d = q.shape
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    payload = np.packbits(((q[..., None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()
    body = (_HEADER.pack(MAGIC, VERSION, bits, 0, fingerprint, n, d) + quantized.low.astype("<f4").tobytes()
            + quantized.high.astype("<f4").tobytes() + payload)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, source: str) -> tuple[Quantized, bytes]:
    """The quantized codes in a compressed file and the fingerprint of the model that made it.

    Every malformed file is a DataError naming ``source``: too short, not this format, another version, a size
    other than its header promises, a checksum that does not match, or impossible header values.
    """
    if len(data) < _HEADER.size + _CRC.size:
        raise DataError(f"{source} is truncated: {len(data)} bytes, fewer than the {_HEADER.size + _CRC.size} of "
                        "an empty aekit compressed file; compress the images again")
    magic, version, bits, _, fingerprint, n, d = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DataError(f"{source} is not an aekit compressed file (it does not start with {MAGIC!r}); give a file "
                        "written by `aekit compress`")
    if version != VERSION:
        raise DataError(f"{source} is a version {version} aekit compressed file and this aekit reads version "
                        f"{VERSION}; decompress it with the aekit that wrote it")
    expected = _HEADER.size + 8 * d + math.ceil(n * d * bits / 8) + _CRC.size
    if len(data) < expected:
        raise DataError(f"{source} is truncated: its header promises {expected} bytes but it holds {len(data)}; "
                        "compress the images again")
    if len(data) > expected:
        raise DataError(f"{source} has {len(data) - expected} bytes after the {expected} its header promises; it "
                        "is corrupted, compress the images again")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[:-_CRC.size]) != crc:
        raise DataError(f"{source} is corrupted (its CRC-32 checksum does not match its contents); compress the "
                        "images again")
    if not 1 <= bits <= MAX_BITS:
        raise DataError(f"{source} claims {bits} bits per value (1 to {MAX_BITS} are possible); it is corrupted")
    offset = _HEADER.size
    low = np.frombuffer(data, "<f4", d, offset).astype(np.float32)
    high = np.frombuffer(data, "<f4", d, offset + 4 * d).astype(np.float32)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
        raise DataError(f"{source} holds quantization ranges that are not finite intervals; it is corrupted")
    payload = np.frombuffer(data, np.uint8, len(data) - _CRC.size - offset - 8 * d, offset + 8 * d)
    bit_values = np.unpackbits(payload)[:n * d * bits].reshape(n, d, bits).astype(np.uint16)
    q = (bit_values << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(-1, dtype=np.uint16)
    return Quantized(q, low, high, bits), fingerprint
