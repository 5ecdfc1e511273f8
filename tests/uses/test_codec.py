"""The compressed-file format (aekit.codec): its two layouts byte for byte, lossless codeword indices, and a one-line
DataError for every malformed file."""

import math
import struct

import numpy as np
import pytest
from helpers import set_field, with_crc
from hypothesis import given, settings
from hypothesis import strategies as st

from aekit import codec
from aekit.errors import DataError

FINGERPRINT = bytes(range(16))


def _bits_msb_first(values, bits: int) -> bytes:
    """The payload written out independently: each value's bits as a string, concatenated, zero-padded."""
    text = "".join(format(int(v), f"0{bits}b") for v in np.ravel(values))
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i : i + 8], 2) for i in range(0, len(text), 8))


def test_a_version_1_file_is_laid_out_as_documented_and_still_decodes():
    q = np.array([[0, 5, 7], [3, 1, 6]], np.uint16)
    low, high = np.array([-1, 0, 2], np.float32), np.array([1, 0.5, 3], np.float32)
    written = with_crc(
        struct.pack("<4sHBB16sII", b"AEKC", 1, 3, 0, FINGERPRINT, 2, 3)
        + low.astype("<f4").tobytes()
        + high.astype("<f4").tobytes()
        + _bits_msb_first(q, 3)
    )
    assert codec.encode(codec.Quantized(q, low, high, 3), FINGERPRINT) == written
    read, fingerprint = codec.decode(written, "f")
    assert isinstance(read, codec.Quantized) and fingerprint == FINGERPRINT
    assert np.array_equal(read.q, q) and np.array_equal(read.low, low) and np.array_equal(read.high, high)
    assert read.bits == 3


def test_a_version_2_file_is_laid_out_as_documented():
    indices = np.array([[0, 9, 4], [7, 1, 2]])
    written = with_crc(
        struct.pack("<4sHBB16sIII", b"AEKC", 2, 4, 0, FINGERPRINT, 2, 3, 10) + _bits_msb_first(indices, 4)
    )
    assert codec.encode_indices(indices, 10, FINGERPRINT) == written
    read, fingerprint = codec.decode(written, "f")
    assert isinstance(read, codec.Indices) and fingerprint == FINGERPRINT
    assert read.indices.dtype == np.int64 and np.array_equal(read.indices, indices) and read.codebook_size == 10


@pytest.mark.parametrize("codebook_size", [2, 3, 10, 255, 256, 257, 4096, 65536])
@pytest.mark.parametrize("n, d", [(0, 4), (1, 1), (37, 7)])
def test_indices_round_trip_losslessly_at_ceil_log2_k_bits_each(codebook_size, n, d):
    indices = np.random.default_rng(codebook_size + n).integers(0, codebook_size, (n, d))
    if n:
        indices[0, 0] = codebook_size - 1  # the largest index fits
    data = codec.encode_indices(indices, codebook_size, FINGERPRINT)
    bits = math.ceil(math.log2(codebook_size))
    assert codec.index_bits(codebook_size) == bits
    assert len(data) == 36 + math.ceil(n * d * bits / 8) + 4
    read, _ = codec.decode(data, "f")
    assert np.array_equal(read.indices, indices) and read.indices.shape == (n, d)


def test_a_byte_per_index_for_a_codebook_of_256():
    indices = np.arange(10_000 * 10).reshape(10_000, 10) % 256
    assert len(codec.encode_indices(indices.astype(np.uint8), 256, FINGERPRINT)) == 100_000 + 40


@pytest.mark.parametrize(
    "indices, codebook_size, match",
    [
        (np.zeros((2, 2), int), 1, "a codebook of 1 codewords"),
        (np.zeros((2, 2), int), 65537, "a codebook of 65537"),
        (np.zeros(4, int), 16, "must be 2-D integers"),
        (np.zeros((2, 2)), 16, "must be 2-D integers"),
        (np.array([[0, 16]]), 16, "from 0 to 16 do not fit a codebook of 16"),
        (np.array([[-1, 3]]), 16, "from -1 to 3"),
    ],
)
def test_indices_that_cannot_be_stored_are_refused(indices, codebook_size, match):
    with pytest.raises(DataError, match=match):
        codec.encode_indices(indices, codebook_size, FINGERPRINT)


@pytest.fixture(scope="module")
def index_file():
    return codec.encode_indices(np.random.default_rng(0).integers(0, 10, (50, 6)), 10, FINGERPRINT)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b[:-1], "truncated: its header promises"),
        (lambda b: b[:20], "truncated: 20 bytes"),
        (lambda b: b + b"\0", "1 bytes after"),
        (lambda b: b[:40] + bytes([b[40] ^ 4]) + b[41:], "checksum"),
        (lambda b: b"PK\x03\x04" + b[4:], "not an aekit compressed file"),
        (lambda b: set_field(b, 4, "<H", 7), "version 7 .* reads versions 1 .*, 2 .*, 3 .*, 4 .*, 5 .* and 6"),
        (lambda b: set_field(b, 32, "<I", 1), "a codebook of 1 codewords"),
        (lambda b: set_field(b, 32, "<I", 17), "a codebook of 17 codewords stored at 4 bits"),
        (lambda b: set_field(b, 32, "<I", 70000), "a codebook of 70000"),
    ],
)
def test_a_malformed_index_file_is_one_data_error(index_file, damage, match):
    with pytest.raises(DataError, match=match) as error:
        codec.decode(damage(index_file), "f")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("bits", [0, 17])
def test_impossible_bits_are_refused(bits):
    empty = codec.encode_indices(np.zeros((0, 3), int), 10, FINGERPRINT)  # no payload: its size does not tell
    with pytest.raises(DataError, match=f"claims {bits} bits per value"):
        codec.decode(set_field(empty, 6, "<B", bits), "f")


def test_an_index_beyond_the_codebook_is_refused():
    # 4 bits hold 0..15 and a codebook of 10 has 0..9: a stored 15 (crc fixed) is a corrupted file.
    data = codec.encode_indices(np.array([[9, 3]]), 10, FINGERPRINT)
    forged = with_crc(data[:36] + bytes([0xF3]) + data[37:-4])
    with pytest.raises(DataError, match="holds index 15 of a codebook of 10"):
        codec.decode(forged, "f")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_fuzzed_index_files_give_data_errors_only(index_file, data):
    blob = bytearray(index_file)
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    else:
        offset, fmt = data.draw(st.sampled_from([(4, "<H"), (6, "<B"), (24, "<I"), (28, "<I"), (32, "<I")]))
        blob = bytearray(
            set_field(bytes(blob), offset, fmt, data.draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1)))
        )
    try:
        read, _ = codec.decode(bytes(blob), "f")
    except DataError as error:
        assert "\n" not in str(error)
    else:
        values = read.indices if isinstance(read, codec.Indices) else read.q
        assert values.min(initial=0) >= 0
