"""Fuzzed input: every reader of outside bytes returns a valid result or raises an AekitError with a one-line
message. Never another exception (numpy, zipfile, PIL, safetensors, json, torch), never a hang, and never an
allocation that the input's own bytes do not pay for: a header that claims 10^12 examples is refused before anything
of that size is allocated.

Each reader is fuzzed twice: structured mutations of a valid file (cut short, bytes flipped, header fields changed,
huge dimensions, other dtypes, NaN and infinity, non-UTF-8, deep or huge JSON) and raw bytes. Hypothesis runs
derandomized, so CI sees the same cases every time; ``bench/faults.py`` runs the same strategies for longer.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from aekit.cli import main
from aekit.data import Dataset, load_dataset
from aekit.data.arrays import load_array_file
from aekit.data.idx import IDX_CODES, read_idx, read_idx_file
from aekit.data.images import load_image_folder
from aekit.data.mnist import load_mnist
from aekit.errors import AekitError, DataError, RunError
from aekit.models import build_model, model_config
from aekit.training import run_folder
from aekit.training.trainer import TrainSettings, train

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SECONDS_PER_CASE = 20  # a case taking longer is a hang
MEMORY_HEADROOM = 1 << 30  # bytes a case may allocate beyond what the process holds; no case here pays for more


# ---------------------------------------------------------------- the property


@contextlib.contextmanager
def _bounded():
    """Turn a hang into a failure (SIGALRM) and cap the address space, so an allocation the input does not pay
    for fails here instead of succeeding lazily. Both only where the platform has them (Linux)."""
    capped = sys.platform == "linux"
    if capped:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (in_use + MEMORY_HEADROOM, hard))

    def hang(*_):
        raise TimeoutError(f"a reader ran for more than {SECONDS_PER_CASE} s")

    previous = signal.signal(signal.SIGALRM, hang) if hasattr(signal, "SIGALRM") else None
    if previous is not None:
        signal.alarm(SECONDS_PER_CASE)
    try:
        yield
    finally:
        if previous is not None:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        if capped:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(read, *args, **kwargs):
    """What ``read`` gives for fuzzed input: its result, or the AekitError it raised. Anything else propagates and
    fails the test; an AekitError must be one line that does not blame memory (inputs here are small, so running out
    of memory means a size claim was believed)."""
    with _bounded():
        try:
            return read(*args, **kwargs)
        except AekitError as error:
            message = str(error)
            assert message and "\n" not in message and "\r" not in message, repr(message)
            assert "memory" not in message.lower() and "allocate" not in message.lower(), message
            return error


# ---------------------------------------------------------------- damage


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """``valid`` damaged the ways files get damaged: cut short, bytes flipped (mostly in the header), a span
    replaced, junk appended, or emptied; one to three times."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "splice", "append", "empty"]))
        if kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "flip" and data:
            i = draw(st.integers(0, min(len(data) - 1, 255)) | st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "splice":
            i = draw(st.integers(0, len(data)))
            j = draw(st.integers(i, min(len(data), i + 16)))
            data[i:j] = draw(st.binary(max_size=16))
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "empty":
            data = bytearray()
    return bytes(data)


# Sizes a header may claim: small, at a boundary, or absurd.
HUGE = st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 10**9, 10**12, 2**63 - 1])
SIZES = st.integers(0, 5) | HUGE
RAW = st.binary(max_size=300)


# ---------------------------------------------------------------- IDX and MNIST


@st.composite
def idx_files(draw) -> bytes:
    """IDX bytes whose header may lie: any type code, up to 255 dimensions, huge sizes, a body too short or long."""
    code = draw(st.sampled_from(sorted(IDX_CODES)) | st.integers(0, 255))
    ndim = draw(st.integers(0, 4) | st.integers(33, 255))
    dims = draw(st.lists(st.integers(0, 5) | st.sampled_from([2**31, 2**32 - 1, 10**9]), min_size=ndim, max_size=ndim))
    head = bytes([0, 0, code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    size = math.prod(dims) * (IDX_CODES[code].itemsize if code in IDX_CODES else 1)
    body = bytes(draw(st.integers(0, 64))) if size > 4096 else bytes(max(0, size + draw(st.integers(-2, 2))))
    return head + body


def check_idx(data: bytes):
    result = outcome(read_idx, data, "fuzz.idx")
    if isinstance(result, np.ndarray):
        assert result.shape == tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3]))
        assert result.dtype.isnative
    return result


def check_idx_file(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return outcome(read_idx_file, path)


def check_mnist_folder(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).write_bytes(data)
        result = outcome(load_mnist, folder)
        assert isinstance(result, DataError)  # no fuzzed file is the published one
        return result


IDX_CASES = idx_files() | RAW | damaged(bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 2]) + bytes(range(6)))
IDX_FILE_CASES = st.tuples(
    st.sampled_from(["x-idx2-ubyte", "x-idx2-ubyte.gz"]),
    damaged(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 4]) + b"abcd", mtime=0)) | RAW,
)
MNIST_CASES = st.tuples(
    st.sampled_from(["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]),
    idx_files()
    | RAW
    | damaged(gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(784), mtime=0)),
)


@FUZZ
@given(IDX_CASES)
@example(bytes([0, 0, 8, 255]) + bytes([0, 0, 0, 1]) * 255 + b"\1")  # more dimensions than NumPy allows
@example(bytes([0, 0, 8, 3]) + bytes(4) + b"\xff" * 8)  # no values, but a size NumPy cannot compute
def test_idx_bytes(data):
    check_idx(data)


@FUZZ
@given(IDX_FILE_CASES)
def test_idx_files_plain_and_gzipped(case):
    check_idx_file(*case)


@FUZZ
@given(MNIST_CASES)
def test_mnist_folder(case):
    check_mnist_folder(*case)


def test_a_gzip_bomb_in_the_mnist_folder_is_refused_without_inflating_it(tmp_path):
    # 2 GiB of zeros in 2 MB (128 gzip members of 16 MiB each): more than any of the four MNIST files, and more
    # than the memory cap allows.
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(1 << 24), mtime=0) * 128)
    error = outcome(load_mnist, tmp_path)
    assert isinstance(error, DataError) and "decompresses to more than" in str(error)


# ---------------------------------------------------------------- .npy, .npz, .csv

DESCRS = st.sampled_from(
    [
        "<f4",
        "<f8",
        ">f4",
        "<f2",
        "|u1",
        "<i8",
        ">i4",
        "|b1",
        "<c8",
        "|O",
        "<U3",
        "|V4",
        "<M8[s]",
        "|S0",
        "<f16",
        "nonsense",
        [("a", "<f4")],
        [("a", "<f4", (10**9,))],
        5,
        None,
    ]
)


def npy_header(descr, fortran, shape, version=1) -> bytes:
    """The header of an .npy file for any (possibly lying) fields, in the layout numpy.save writes."""
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    size_field = 2 if version == 1 else 4
    pad = -(10 + size_field - 6 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    packed = struct.pack("<H" if version == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + packed + text.encode("latin1")


@st.composite
def npy_files(draw) -> bytes:
    """An .npy file whose header may lie about dtype, order and shape, with a body that may not match."""
    shape = tuple(draw(st.lists(SIZES | st.integers(-3, -1), max_size=4)))
    if draw(st.booleans()):
        shape = draw(st.sampled_from([[2, 3], (2, "3"), (2.5, 3), "(2, 3)", (True, 3)]))
    descr = draw(DESCRS)
    head = npy_header(descr, draw(st.sampled_from([False, True, "no"])), shape, version=draw(st.sampled_from([1, 2])))
    try:
        claimed = math.prod(shape) * np.dtype(descr).itemsize
    except Exception:  # the descr or shape is not even valid for numpy: any body will do
        claimed = 16
    claimed = claimed if isinstance(claimed, int) else 16  # math.prod of a string repeats it
    body = (
        draw(st.binary(min_size=0, max_size=64))
        if not 0 <= claimed <= 4096
        else bytes(max(0, claimed + draw(st.integers(-3, 3))))
    )
    return head + body


@st.composite
def arrays(draw) -> np.ndarray:
    """Small arrays of every kind a user might save, including NaN, infinity and values beyond float32."""
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    kind = draw(st.sampled_from(["f8", "f4", "f2", "i8", "u1", "u8", "b1", "c8", "U2", "M8[s]"]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=shape) * 10
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 1e300]))
    if special is not None and values.size:
        values.flat[0] = special
    with np.errstate(all="ignore"):
        return values.astype(kind) if kind != "U2" else values.astype(int).astype("U2")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


NPZ_NAMES = st.sampled_from(
    ["x", "y", "x_train", "x_test", "y_train", "y_test", "a", "x.npy", "x.txt", "dir/x", "dir/", "\u00e9", ".npy"]
)


@st.composite
def npz_files(draw) -> bytes:
    """A zip of members that may be valid arrays, lying .npy files, raw bytes or oddly named; stored, deflated or
    with a compression method numpy cannot read."""
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
    with zipfile.ZipFile(buffer, "w", compression=method) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate name is a case worth trying
        for _ in range(draw(st.integers(0, 4))):
            name = draw(NPZ_NAMES)
            content = draw(st.one_of(arrays().map(npy_bytes), npy_files(), RAW))
            archive.writestr(name if name.endswith((".npy", ".txt", "/")) else f"{name}.npy", content)
    return buffer.getvalue()


CSV_CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.sampled_from(
        ["", " ", "x", "1e999", "-1e-999", "1_0", "0x1f", "nan", '"1,2"', '"1\n2"', "\x00", "\ufeff1", "１"]
    ),
    st.text(max_size=4),
)


@st.composite
def csv_files(draw) -> bytes:
    """Comma-separated rows that are mostly numbers: ragged, with a header, NaN, huge values, odd text, any
    encoding."""
    width = draw(st.integers(1, 4))
    rows = draw(
        st.lists(
            st.lists(CSV_CELLS, min_size=width - 1, max_size=width + 1)
            | st.lists(st.floats(-1e6, 1e6).map(repr), min_size=width, max_size=width),
            max_size=8,
        )
    )
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(",".join(row) for row in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def check_array_file(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        result = outcome(load_array_file, path, seed=0, test_fraction=0.5)
        if not isinstance(result, AekitError):
            assert result.x_train.dtype == np.float32 and np.isfinite(result.x_train).all()
        return result


def _zipped(member: bytes, name: str = "x.npy", method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr(name, member)
    return buffer.getvalue()


def unknown_method(data: bytes) -> bytes:
    """A one-member zip whose compression method field (local and central header) is 99, which zipfile lacks."""
    data = bytearray(data)
    central = data.index(b"PK\x01\x02")
    data[8:10] = data[central + 10 : central + 12] = (99).to_bytes(2, "little")
    return bytes(data)


NPY_CASES = npy_files() | arrays().map(npy_bytes) | arrays().map(npy_bytes).flatmap(damaged) | RAW
NPZ_CASES = npz_files() | npz_files().flatmap(damaged) | RAW
CSV_CASES = csv_files() | csv_files().flatmap(damaged) | RAW


@FUZZ
@given(NPY_CASES)
@example(npy_header("<f4", False, (2**31, 2**63 - 1, -1)))  # a negative size whose product NumPy overflows
@example(npy_header("<f4", False, (True, 3)) + bytes(12))  # a bool for a size
@example(b"\x93NUMPY\x00\x00\x00\x00\x00@")  # version 0.0: read as 2.0, its length field claims 1 GiB
@example(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{")  # a 2 GiB header length
@example(b"\x93NUMPY\x01\x00\x7a\x00" + bytes(121) + b"{")  # NUL bytes: tokenize.TokenError from NumPy
@example(b"\x93NUMPY\x01\x00\x79\x00" + bytes(118) + b"'''")  # an unterminated string, likewise
@example(npy_bytes(np.full((4, 2), 1e300)))  # finite, but not as float32
def test_npy(data):
    check_array_file("fuzz.npy", data)


@FUZZ
@given(NPZ_CASES)
@example(_zipped(b"hello", "x.txt"))  # not an array: np.load hands back bytes
@example(_zipped(npy_header("<f8", False, (10**8, 2)) + bytes(16)))  # 1.5 GiB claimed by a 200-byte member
@example(_zipped(npy_bytes(np.ones((4, 2))), method=zipfile.ZIP_LZMA)[:-60])  # LZMAError
@example(unknown_method(_zipped(npy_bytes(np.ones((4, 2))))))  # NotImplementedError
def test_npz(data):
    check_array_file("fuzz.npz", data)


@FUZZ
@given(CSV_CASES)
def test_csv(data):
    check_array_file("fuzz.csv", data)


TRILLION = npy_header("<f8", False, (10**12, 10)) + bytes(80)


@pytest.mark.parametrize("name, data", [("forged.npy", TRILLION), ("forged.npz", _zipped(TRILLION))])
def test_a_header_claiming_a_trillion_examples_is_refused_before_allocation(name, data):
    error = check_array_file(name, data)
    assert isinstance(error, DataError) and "promises shape (1000000000000, 10)" in str(error), error


# ---------------------------------------------------------------- image folders

MODES = st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F", "CMYK"])


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """A small image in any mode as PNG or JPEG, or in another format Pillow reads by content (BMP, GIF, TIFF, ...)
    under one of those names; then maybe damaged, or with its PNG header claiming another size (with a correct
    checksum, so only the size is a lie)."""
    mode = draw(MODES)
    width, height = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    image = Image.new(mode, (width, height), draw(st.integers(0, 255)))
    suffix = draw(st.sampled_from([".png", ".jpg"]))
    kind = draw(st.sampled_from(["PNG" if suffix == ".png" else "JPEG", "BMP", "GIF", "TIFF", "PPM", "ICO", "WEBP"]))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=kind)
    except (OSError, ValueError, KeyError):  # a mode the format cannot store: keep it as PNG
        suffix, buffer = ".png", io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    change = draw(st.sampled_from(["none", "damage", "size"]))
    if change == "damage":
        data = draw(damaged(data))
    elif change == "size" and data[12:16] == b"IHDR":
        data = resized_png(data, draw(SIZES), draw(SIZES))
    return suffix, data


def resized_png(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (mod 2^32), its checksum fixed to match."""
    ihdr = (width % 2**32).to_bytes(4, "big") + (height % 2**32).to_bytes(4, "big") + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def check_image_folder(files: list[tuple[str, tuple[str, bytes]]]):
    """``files``: (subfolder, (suffix, bytes)) of each image."""
    with tempfile.TemporaryDirectory() as folder:
        for i, (sub, (suffix, data)) in enumerate(files):
            path = Path(folder) / f"{sub}{i:02d}{suffix}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        result = outcome(load_image_folder, folder, seed=0, test_fraction=0.5)
        if not isinstance(result, AekitError):
            x = np.concatenate([result.x_train, result.x_test])
            assert len(x) == len(files) and 0 <= x.min() and x.max() <= 1
        return result


IMAGE_CASES = st.lists(
    st.tuples(st.sampled_from(["", "a/", "b/"]), image_files() | st.tuples(st.just(".png"), RAW)),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(IMAGE_CASES)
def test_image_folder(files):
    check_image_folder(files)


def test_a_png_chunk_claiming_2_gib_is_not_read_as_claimed():
    # Pillow reads the rest of an IDAT chunk by its stated length: from a file object that asked for 2 GiB at once.
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    length = data.index(b"IDAT") - 4
    data[length : length + 4] = (2**31 - 1).to_bytes(4, "big")
    images = check_image_folder([("", (".png", bytes(data)))] * 2)  # MemoryError before reading from memory
    assert isinstance(images, Dataset) and images.shape == (1, 1, 1), images


def test_many_images_whose_headers_claim_a_huge_size_are_refused_before_allocation():
    # 40 PNG headers of 70 bytes each claim 9000 x 9000 RGB pixels: 36 GiB as float32, paid for by 3 kB of files.
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    error = check_image_folder([("", (".png", resized_png(buffer.getvalue(), 9000, 9000)))] * 40)
    assert isinstance(error, DataError) and "00.png cannot be read as an image" in str(error), error


# ---------------------------------------------------------------- run folders

SPEC = model_config("vae", (1, 8, 8), code_dim=2, hidden=(8,))
SMALL = 64  # training examples in small_digits
OPTIONS = {"dataset": "digits", "data_dir": None, "test_fraction": 0.2, "seed": 0}


def small_digits(digits: Dataset) -> Dataset:
    return Dataset("digits", digits.x_train[:SMALL], digits.x_test[:16], None, None, binary=True)


def make_run(out: Path, small: Dataset) -> Path:
    """A real run folder in ``out``: a small VAE trained one epoch on ``small``, with the data options of digits."""
    out.mkdir(parents=True)
    run_folder.write_json(
        out / run_folder.CONFIG, {"aekit_version": "0.1.0", "options": OPTIONS, "model": SPEC.to_dict()}
    )
    torch.manual_seed(0)
    train(build_model(SPEC), small, TrainSettings(epochs=1, batch_size=32), out=out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def small(digits):
    return small_digits(digits)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small):
    return make_run(tmp_path_factory.mktemp("fuzz") / "run", small)


def _run_copy(run_dir: Path, folder: Path, replace: dict[str, bytes]) -> Path:
    for name in (run_folder.CONFIG, run_folder.WEIGHTS, run_folder.CHECKPOINT):
        (folder / name).write_bytes(replace.get(name, (run_dir / name).read_bytes()))
    return folder


def check_run(run_dir: Path, replace: dict[str, bytes]):
    """aekit.load of a copy of ``run_dir`` with the files in ``replace`` (name: bytes) swapped in."""
    with tempfile.TemporaryDirectory() as folder:
        result = outcome(run_folder.load, _run_copy(run_dir, Path(folder), replace))
        if not isinstance(result, AekitError):
            assert all(torch.isfinite(v).all() for v in result.state_dict().values())
        return result


def check_checkpoint(run_dir: Path, small: Dataset, data: bytes):
    """load_checkpoint gives the loop state or a RunError; resuming from what it accepts trains or raises an
    AekitError."""
    with tempfile.TemporaryDirectory() as folder:
        folder = _run_copy(run_dir, Path(folder), {run_folder.CHECKPOINT: data})
        result = outcome(run_folder.load_checkpoint, folder / run_folder.CHECKPOINT)
        assert isinstance(result, (dict, RunError))
        if isinstance(result, dict):
            return outcome(
                train,
                build_model(SPEC),
                small,
                TrainSettings(epochs=2, batch_size=32),
                out=folder,
                device="cpu",
                progress=False,
                resume=True,
            )
        return result


def check_read_json(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.json"
        path.write_bytes(data)
        result = outcome(run_folder.read_json, path)
        assert isinstance(result, (dict, RunError))
        return result


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
JSON_CASES = (
    st.one_of(
        JSON.map(json.dumps),
        st.integers(1, 200_000).map(lambda depth: "[" * depth + "]" * depth),  # deep enough to exhaust the recursion
        st.integers(4000, 6000).map(lambda digits: '{"model": ' + "7" * digits + "}"),  # past int's digit limit
        st.just('{"model": {"model": "ae"' + ', "x": 1' * 50_000 + "}}"),
        st.text(max_size=40),
    ).map(str.encode)
    | RAW
    | st.sampled_from([b"\xff\xfe{}", b'{"model": {}}\xff', b"\x00"])
)


@st.composite
def config_texts(draw, original: bytes) -> bytes:
    """The run's config.json with one model setting replaced by any JSON value or a huge size, its model section
    replaced, or its bytes damaged."""
    config = json.loads(original)
    how = draw(st.sampled_from(["setting", "model", "bytes"]))
    if how == "setting":
        key = draw(st.sampled_from(sorted(config["model"]) + ["unknown"]))
        config["model"][key] = draw(
            JSON | SIZES | st.lists(SIZES, max_size=4) | st.sampled_from([math.nan, math.inf, -1, 0, 1.5, 10**30])
        )
    elif how == "model":
        config["model"] = draw(JSON)
    else:
        return draw(damaged(original) | JSON_CASES)
    return json.dumps(config).encode()


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


@st.composite
def weights_files(draw, original: bytes) -> bytes:
    """The run's model.safetensors with one field of one tensor's header entry changed (dtype, shape, offsets),
    NaN, infinity or a huge value in a tensor, or its bytes damaged."""
    header, body = _safetensors_parts(original)
    how = draw(st.sampled_from(["header", "values", "bytes"]))
    if how == "header":
        key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[key][field] = draw(
            st.sampled_from(["F16", "F64", "I8", "BOOL", "U8", "X9", 7])
            if field == "dtype"
            else st.lists(SIZES | st.integers(-2, -1), max_size=4)
        )
        return _safetensors(header, body)
    if how == "values":
        values = np.frombuffer(bytearray(body), dtype="<f4")
        values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
        return original[: len(original) - len(body)] + values.tobytes()
    return draw(damaged(original) | RAW)


def _saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@st.composite
def checkpoint_files(draw, original: bytes) -> bytes:
    """The run's checkpoint.pt damaged, or well-formed with the wrong content: any plain value, or the real loop
    state with one entry replaced."""
    if draw(st.booleans()):
        return draw(damaged(original) | RAW)
    state = torch.load(io.BytesIO(original), weights_only=True)
    value = draw(JSON | st.sampled_from([torch.zeros(2), torch.tensor(float("nan")), [torch.ones(1)]]))
    if draw(st.booleans()):
        state[draw(st.sampled_from(sorted(state)))] = value
        return _saved(state)
    return _saved(value)


@FUZZ
@given(JSON_CASES)
def test_read_json(data):
    check_read_json(data)


@FUZZ
@given(data=st.data())
def test_config_json(run_dir, data):
    check_run(run_dir, {run_folder.CONFIG: data.draw(config_texts((run_dir / run_folder.CONFIG).read_bytes()))})


@FUZZ
@given(data=st.data())
def test_weights(run_dir, data):
    check_run(run_dir, {run_folder.WEIGHTS: data.draw(weights_files((run_dir / run_folder.WEIGHTS).read_bytes()))})


@settings(FUZZ, max_examples=50)  # an accepted checkpoint costs a resumed epoch
@given(data=st.data())
def test_checkpoint(run_dir, small, data):
    check_checkpoint(run_dir, small, data.draw(checkpoint_files((run_dir / run_folder.CHECKPOINT).read_bytes())))


# What the fuzzing found in run folders, pinned.


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("hidden", [10**12], "does not match"),  # torch tried to allocate 256 TB
        ("code_dim", 1.5, "model.code_dim is 1.5 (a decimal number); it must be a whole number"),
        ("shape", ["a", 8, 8], "model.shape is ['a', 8, 8] (a list); it must be a list of whole numbers"),
    ],
)
def test_a_config_describing_an_impossible_model_is_refused_before_building_it(run_dir, setting, value, message):
    config = json.loads((run_dir / run_folder.CONFIG).read_text())
    config["model"][setting] = value
    error = check_run(run_dir, {run_folder.CONFIG: json.dumps(config).encode()})
    assert isinstance(error, RunError) and message in str(error), error


def test_weights_holding_nan_are_refused(run_dir):
    header, body = _safetensors_parts((run_dir / run_folder.WEIGHTS).read_bytes())
    values = np.frombuffer(bytearray(body), dtype="<f4")
    values[0] = np.nan
    error = check_run(run_dir, {run_folder.WEIGHTS: _safetensors(header, values.tobytes())})
    assert isinstance(error, RunError) and "NaN or infinite weights" in str(error), error


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"model": ' + "7" * 5000 + "}"])
def test_json_nested_too_deep_or_with_a_huge_integer_is_refused(text):
    assert isinstance(check_read_json(text.encode()), RunError)


def _with(state: dict, **entries) -> dict:
    return {**state, **entries}


@pytest.mark.parametrize(
    "change",
    [
        lambda state: torch.zeros(3),  # IndexError in the trainer
        lambda state: _with(state, position={"step": 1}),  # KeyError in the loop
        lambda state: _with(state, history=[1, 2]),  # TypeError when the history is written
        lambda state: _with(
            state, position={"step": 1, "order": torch.zeros(3), "skipped": 0, "sums": {}, "seconds": 0.0}
        ),  # a float order: IndexError in the loop
        lambda state: _with(
            state, position={"step": 1, "order": torch.arange(10**5), "skipped": 0, "sums": {}, "seconds": 0.0}
        ),  # an order longer than the data: IndexError in the loop
        lambda state: _with(
            state,
            position={
                "step": 1,
                "order": torch.zeros(SMALL, dtype=torch.int64),
                "skipped": 0,
                "sums": {},
                "seconds": 0.0,
            },
        ),  # not a permutation: silently wrong
        lambda state: _with(
            state, position={"step": 10**6, "order": torch.arange(SMALL), "skipped": 0, "sums": {}, "seconds": 0.0}
        ),  # past the epoch's end: a record of nothing
        lambda state: _with(
            state, position={"step": 1, "order": torch.arange(SMALL), "skipped": -5, "sums": {}, "seconds": 0.0}
        ),
        lambda state: _with(state, rng={**state["rng"], "numpy": 5}),  # AttributeError
        lambda state: _with(state, model={}),  # an AekitError over several lines (the missing keys)
        lambda state: b"X\x00\x00\x00A",  # the old pickle format, claiming a 1 GiB string: torch allocated it
    ],
)
def test_a_checkpoint_of_the_wrong_layout_is_refused_in_one_line(run_dir, small, change):
    state = torch.load(run_dir / run_folder.CHECKPOINT, weights_only=True)
    changed = change(state)
    error = check_checkpoint(run_dir, small, changed if isinstance(changed, bytes) else _saved(changed))
    assert isinstance(error, AekitError), error


# ---------------------------------------------------------------- dataset options from a config

OPTION_CASES = st.tuples(
    st.sampled_from(["digits", "mnist", "nowhere.npy"]) | JSON,
    JSON,
    JSON | SIZES,
    JSON | st.sampled_from([0.2, math.nan, math.inf, 0, 1]),
)


def check_dataset_options(name, data_dir, seed, test_fraction):
    """The data options of config.json reach load_dataset unchecked by JSON: any value must be refused cleanly."""
    return outcome(load_dataset, name, data_dir=data_dir, seed=seed, test_fraction=test_fraction)


@FUZZ
@given(OPTION_CASES)
@example((None, None, 0, 0.2))  # a TypeError from pathlib
@example(("digits", None, 0, None))  # a TypeError from the comparison
@example(("digits", None, -1, 0.2))  # a ValueError from NumPy's generator
def test_dataset_options_from_a_config(case):
    check_dataset_options(*case)


# ---------------------------------------------------------------- the command line


def _one_line_refusal(capsys, argv, out: Path | None = None):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("aekit: error: ") and "Traceback" not in err, err
    assert out is None or not out.exists()
    return err


@pytest.mark.parametrize(
    "name, data",
    [
        ("forged.npy", TRILLION),
        ("ragged.csv", b"1,2\n3\n"),
        ("latin.csv", b"1,2\n\xe9,3\n"),
        ("method99.npz", unknown_method(_zipped(npy_bytes(np.ones((4, 2)))))),
    ],
)
def test_train_refuses_a_malformed_dataset_in_one_line_and_writes_nothing(capsys, tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "run"
    err = _one_line_refusal(
        capsys, ["train", "--dataset", str(path), "--out", str(out), "--epochs", "1", "--no-progress"], out
    )
    assert name in err


def test_evaluate_refuses_a_malformed_run_in_one_line(capsys, tmp_path, run_dir):
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    config = json.loads((folder / run_folder.CONFIG).read_text())
    config["model"]["hidden"] = [10**12]
    (folder / run_folder.CONFIG).write_text(json.dumps(config))
    assert "does not match" in _one_line_refusal(capsys, ["evaluate", str(folder)])
    (folder / run_folder.CONFIG).write_text("[" * 100_000 + "]" * 100_000)
    assert "not valid JSON" in _one_line_refusal(capsys, ["evaluate", str(folder)])


@pytest.mark.slow
def test_a_real_process_exits_2_with_one_line_on_forged_weights(tmp_path, run_dir):
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    header, body = _safetensors_parts((folder / run_folder.WEIGHTS).read_bytes())
    header[next(k for k in header if k != "__metadata__")]["shape"] = [10**12, 10**12]
    (folder / run_folder.WEIGHTS).write_bytes(_safetensors(header, body))
    result = subprocess.run(
        [sys.executable, "-m", "aekit", "evaluate", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "model.safetensors" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_resuming_a_run_killed_before_its_first_epoch_says_to_start_again(capsys, tmp_path):
    # Before, --resume said "train without --resume first" and training without it "continue it with --resume".
    from aekit.training.settings import defaults, for_family

    out = tmp_path / "run"
    out.mkdir()
    run_folder.write_json(out / run_folder.CONFIG, {"options": for_family(defaults()), "model": SPEC.to_dict()})
    err = _one_line_refusal(capsys, ["train", "--resume", "--out", str(out), "--no-progress"])
    assert "no epoch finished; delete the folder and train again without --resume" in err


# ---------------------------------------------------------------- compressed files (aekit compress)


def compressor(small: Dataset) -> tuple[torch.nn.Module, bytes]:
    """A small untrained auto-encoder and a valid compressed file it made of ``small``'s test images."""
    from aekit.uses import compress

    torch.manual_seed(0)
    model = build_model(model_config("ae", small.shape, code_dim=4, hidden=(16,))).eval()
    return model, compress.compress(model, small.x_test, 6)


def compressed_files(valid: bytes):
    """Damaged copies of ``valid``; the same with the CRC-32 recomputed, so that lying header fields get past the
    checksum to the parser; and raw bytes."""

    def with_crc(data: bytes) -> bytes:
        return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4])) if len(data) >= 4 else data

    return damaged(valid) | damaged(valid).map(with_crc) | RAW


def check_compressed(model: torch.nn.Module, data: bytes):
    from aekit.uses import compress

    return outcome(compress.decompress, model, data, "fuzz.aekc")


@pytest.fixture(scope="module")
def compressed(digits):
    return compressor(small_digits(digits))


@FUZZ
@given(data=st.data())
def test_compressed_files(compressed, data):
    model, valid = compressed
    check_compressed(model, data.draw(compressed_files(valid)))


@pytest.fixture(scope="module")
def hyper_compressed():
    """A tiny untrained hyperprior and a valid version 6 file it made of two images of other sizes, with names."""
    from aekit.uses import compress

    torch.manual_seed(0)
    model = build_model(model_config("hyperprior", (3, 16, 16), code_dim=4, channels=4, likelihood="gaussian")).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in ((16, 16), (9, 23))]
    return model, compress.compress_images(model, images, ["a.png", "b/c.png"])


@FUZZ
@given(data=st.data())
def test_hyperprior_compressed_files(hyper_compressed, data):
    from aekit.uses import compress

    model, valid = hyper_compressed
    outcome(compress.decompress_images, model, data.draw(compressed_files(valid)), "fuzz.aekc")


# ---------------------------------------------------------------- IDX headers that promise more than the file holds


def _idx_header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _traced_peak(read, *args):
    """``read(*args)`` under the memory cap of :func:`outcome`, and the most memory Python allocated meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = outcome(read, *args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "dims, code, claimed",
    [
        ((10**9, 137), 0x08, 137 * 10**9 + 12),  # 137 GB: a MemoryError from gzip before
        ((2**32 - 1, 2**32 - 1), 0x0E, 8 * (2**32 - 1) ** 2 + 12),  # past int64: an OverflowError from gzip before
        ((2**32 - 1,) * 4, 0x0E, 8 * (2**32 - 1) ** 4 + 20),  # past any machine integer
    ],
)
@pytest.mark.parametrize("gzipped", [True, False])
def test_an_idx_header_promising_more_than_the_file_holds_is_refused_before_allocation(
    tmp_path, dims, code, claimed, gzipped
):
    data = _idx_header(code, *dims) + bytes(range(100))
    path = tmp_path / ("forged-ubyte.gz" if gzipped else "forged-ubyte")
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
    error, peak = _traced_peak(read_idx_file, path)
    assert isinstance(error, DataError), error
    expected = "more than deflate's maximum ratio of 1032:1" if gzipped else "is truncated"
    assert f"promises {claimed} bytes" in str(error) or f"promises: {claimed} bytes" in str(error), error
    assert expected in str(error), error
    assert peak < 2**20, peak


def test_a_plain_idx_file_is_measured_before_it_is_read(tmp_path):
    # 64 MiB of trailing zeros behind a header promising 2x3 bytes: refused from the file's size alone.
    path = tmp_path / "long-ubyte"
    with path.open("wb") as file:
        file.write(_idx_header(0x08, 2, 3) + bytes(6))
        file.truncate(12 + 6 + (64 << 20))
    error, peak = _traced_peak(read_idx_file, path)
    assert isinstance(error, DataError) and f"{64 << 20} trailing bytes after the 18" in str(error), error
    assert peak < 2**20, peak


def test_a_gzipped_idx_file_within_deflate_s_ratio_is_inflated_in_bounded_chunks(tmp_path, monkeypatch):
    from aekit.data import idx

    asked = []
    read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, size=-1: asked.append(size) or read(self, size))
    # 8 MiB of zeros compress about 1000:1, near deflate's limit: a real file, read whole.
    zeros = tmp_path / "zeros-ubyte.gz"
    zeros.write_bytes(gzip.compress(_idx_header(0x08, 2048, 4096) + bytes(2048 * 4096), compresslevel=9, mtime=0))
    assert (read_idx_file(zeros) == 0).all()
    assert asked and max(asked) <= idx.CHUNK_SIZE and -1 not in asked, asked
    # A header promising about 500 times the compressed size, within the ratio, over a few bytes: truncated, and
    # only what came out was held.
    short = tmp_path / "short-ubyte.gz"
    short.write_bytes(gzip.compress(_idx_header(0x08, 500, 30) + bytes(10), mtime=0))
    error, peak = _traced_peak(read_idx_file, short)
    assert isinstance(error, DataError) and "is truncated: the header promises 15012 bytes" in str(error), error
    assert peak < 2**20, peak
