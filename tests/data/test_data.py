"""The data layer: IDX parsing, MNIST (local folder, download, cache), array files and image folders."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import os
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aekit.data import load_dataset
from aekit.data.arrays import load_array_file
from aekit.data.dataset import IndexedRows, as_float32, split_indices
from aekit.data.idx import read_idx, read_idx_file
from aekit.data.images import load_image_folder, read_images, scan_images
from aekit.data.mnist import SHA256, load_mnist
from aekit.errors import DataError

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/mnist"
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f"{name}.gz").is_file() for name in SHA256),
    reason=f"the four MNIST .gz files are not in {MNIST_DIR}",
)
TAMPERED = "t10k-labels-idx1-ubyte"


# ---------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file written independently of the reader under test."""
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    "code, dtype",
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_idx_round_trip(code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 7 - 50).astype(dtype)
    parsed = read_idx(idx_bytes(array, code), "test.idx")
    assert parsed.shape == (2, 3, 4)
    assert parsed.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize("suffix, pack", [("", bytes), (".gz", gzip.compress)])
def test_idx_file_plain_and_gzipped(tmp_path, suffix, pack):
    array = np.arange(60, dtype=np.uint8).reshape(6, 10)
    path = tmp_path / f"x-idx2-ubyte{suffix}"
    path.write_bytes(pack(idx_bytes(array, 0x08)))
    np.testing.assert_array_equal(read_idx_file(path), array)


GOOD_IDX = idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4), 0x0B)


@pytest.mark.parametrize(
    "data, message",
    [
        (GOOD_IDX[:-1], "truncated"),
        (GOOD_IDX + b"\0", "trailing"),
        (GOOD_IDX[:10], "truncated"),
        (GOOD_IDX[:3], "truncated"),
        (b"\1" + GOOD_IDX[1:], "not an IDX file"),
        (GOOD_IDX[:2] + b"\x0a" + GOOD_IDX[3:], "type code 0x0A"),
        # 10^12 one-byte values, and a product that overflows int64, promised by a 12-byte file.
        (bytes([0, 0, 0x08, 2]) + np.array([10**6, 10**6], dtype=">u4").tobytes() + b"abcd", "truncated"),
        (bytes([0, 0, 0x0E, 3]) + np.full(3, 2**32 - 1, dtype=">u4").tobytes(), "truncated"),
    ],
)
def test_idx_rejects_bad_files(data, message):
    start = time.perf_counter()
    with pytest.raises(DataError, match=message) as error:
        read_idx(data, "bad.idx")
    assert "bad.idx" in str(error.value)
    assert time.perf_counter() - start < 0.5


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD_IDX)[:-6])
    with pytest.raises(DataError, match="gzip"):
        read_idx_file(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        read_idx_file(path)


# ---------------------------------------------------------------- MNIST from a folder


@pytest.fixture(scope="module")
def mnist():
    """The real MNIST, loaded once; only requested by tests marked ``needs_mnist``."""
    return load_mnist(data_dir=MNIST_DIR)


@needs_mnist
def test_mnist_from_folder(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64 and mnist.binary
    assert np.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(mnist.x_train.mean() - 0.1307) < 1e-3
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0


def link_mnist(folder: Path, skip: str | None = None) -> Path:
    """A folder of links to the real gzipped MNIST files, less ``skip``."""
    folder.mkdir(exist_ok=True)
    for name in SHA256:
        if name != skip:
            os.symlink(MNIST_DIR / f"{name}.gz", folder / f"{name}.gz")
    return folder


def tampered_mnist(folder: Path) -> Path:
    """The real MNIST with one label changed in the (re-gzipped, still valid) test labels."""
    link_mnist(folder, skip=TAMPERED)
    labels = bytearray(gzip.decompress((MNIST_DIR / f"{TAMPERED}.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10
    (folder / f"{TAMPERED}.gz").write_bytes(gzip.compress(bytes(labels)))
    return folder


@needs_mnist
def test_mnist_folder_missing_file(tmp_path):
    with pytest.raises(DataError, match=f"{TAMPERED}.*--data-dir must hold the four MNIST"):
        load_mnist(data_dir=link_mnist(tmp_path / "partial", skip=TAMPERED))
    with pytest.raises(DataError, match="not a folder"):
        load_mnist(data_dir=tmp_path / "nowhere")


@needs_mnist
def test_mnist_folder_checksum_mismatch(tmp_path):
    with pytest.raises(DataError, match=f"{TAMPERED}.gz is damaged.*sha256"):
        load_mnist(data_dir=tampered_mnist(tmp_path / "tampered"))


@needs_mnist
def test_mnist_folder_accepts_uncompressed_files(tmp_path, mnist):
    folder = link_mnist(tmp_path / "mixed", skip=TAMPERED)
    (folder / TAMPERED).write_bytes(gzip.decompress((MNIST_DIR / f"{TAMPERED}.gz").read_bytes()))
    np.testing.assert_array_equal(load_mnist(data_dir=folder).y_test, mnist.y_test)


# ---------------------------------------------------------------- MNIST downloads


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass  # keep request logs out of the test output


@contextlib.contextmanager
def serving(folder: Path):
    """An HTTP server on localhost serving ``folder``; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("AEKIT_MNIST_MIRRORS", raising=False)
    return tmp_path / "data" / "mnist"


@needs_mnist
def test_mnist_download_verifies_and_caches(cache, mnist, monkeypatch):
    # A damaged file already in the cache is replaced, not trusted.
    cache.mkdir(parents=True)
    (cache / f"{TAMPERED}.gz").write_bytes(b"garbage")
    with serving(MNIST_DIR) as url:
        downloaded = load_mnist(mirrors=[url])
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{name}.gz" for name in SHA256)
    np.testing.assert_array_equal(downloaded.y_test, mnist.y_test)

    def no_network(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    cached = load_mnist(mirrors=[url])
    np.testing.assert_array_equal(cached.x_test, mnist.x_test)
    np.testing.assert_array_equal(cached.y_train, mnist.y_train)


@needs_mnist
def test_mnist_tampered_download_is_rejected(cache, tmp_path):
    with serving(tampered_mnist(tmp_path / "tampered")) as url:
        with pytest.raises(DataError, match=f"{url}{TAMPERED}.gz: sha256.*--data-dir"):
            load_mnist(mirrors=[url])
    assert not (cache / f"{TAMPERED}.gz").exists()
    assert not list(cache.glob("*.part"))


@needs_mnist
def test_mnist_download_falls_back_to_next_mirror(cache, tmp_path, mnist):
    with serving(tampered_mnist(tmp_path / "tampered")) as bad, serving(MNIST_DIR) as good:
        downloaded = load_mnist(mirrors=[bad, good])
    np.testing.assert_array_equal(downloaded.y_test, mnist.y_test)
    assert not list(cache.glob("*.part"))


def test_mnist_mirrors_from_environment(cache, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with serving(tmp_path / "empty") as url:
        monkeypatch.setenv("AEKIT_MNIST_MIRRORS", f" {url} ,")
        with pytest.raises(DataError, match=f"{url}train-images-idx3-ubyte.gz: download failed.*--data-dir"):
            load_mnist()
    assert not list(cache.iterdir())


# ---------------------------------------------------------------- array files


def rows(n: int = 50, features: int = 3) -> np.ndarray:
    """Examples whose first feature is their row number, so a split can be traced back."""
    x = np.random.default_rng(0).normal(size=(n, features))
    x[:, 0] = np.arange(n)
    return x


def test_npy(tmp_path):
    x = rows()
    np.save(tmp_path / "x.npy", x)
    data = load_array_file(tmp_path / "x.npy", seed=1, test_fraction=0.2)
    assert (len(data.x_train), len(data.x_test)) == (40, 10)
    assert data.x_train.dtype == np.float32 and data.shape == (3,) and not data.binary
    assert data.y_train is None and data.y_test is None
    together = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_allclose(together[np.argsort(together[:, 0])], x.astype(np.float32))


def test_image_shaped_arrays_stay_images_and_other_shapes_are_flattened(tmp_path):
    x = np.arange(10 * 2 * 3, dtype=np.int16).reshape(10, 2, 3)
    np.save(tmp_path / "x.npy", x)
    data = load_array_file(tmp_path / "x.npy", seed=0, test_fraction=0.3)
    assert data.shape == (1, 2, 3) and data.is_image and len(data.x_test) == 3 and not data.binary
    assert sorted(data.x_train[:, 0, 0, 0].tolist() + data.x_test[:, 0, 0, 0].tolist()) == list(range(0, 60, 6))
    channels_last = np.random.default_rng(0).random((10, 4, 5, 3), dtype=np.float32)
    np.save(tmp_path / "rgb.npy", channels_last)
    data = load_array_file(tmp_path / "rgb.npy", seed=0, test_fraction=0.3)
    assert data.shape == (3, 4, 5)
    assert any(np.array_equal(data.x_test[0], image.transpose(2, 0, 1)) for image in channels_last)
    np.save(tmp_path / "deep.npy", np.zeros((10, 2, 3, 4, 5), np.float32))
    assert load_array_file(tmp_path / "deep.npy", seed=0, test_fraction=0.3).shape == (120,)


def test_a_uint8_array_is_read_as_intensities_as_the_apps_read_it(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", pixels)
    data = load_array_file(tmp_path / "u8.npy", seed=0, test_fraction=0.25)
    assert data.binary and data.shape == (1, 6, 6) and data.value_range[1] <= 1
    from aekit.data.files import read_examples

    as_the_apps_read_it = read_examples(tmp_path / "u8.npy").x
    assert all(any(np.array_equal(row[0], image) for image in as_the_apps_read_it) for row in as_float32(data.x_test))


def test_npz_pre_split(tmp_path):
    x_train, x_test = rows(8), rows(4)
    np.savez(tmp_path / "d.npz", x_train=x_train, x_test=x_test, y_train=np.arange(8), y_test=np.arange(4) % 2)
    data = load_array_file(tmp_path / "d.npz", seed=0, test_fraction=0.5)
    np.testing.assert_array_equal(data.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(data.x_test, x_test.astype(np.float32))
    assert data.y_train.dtype == np.int64 and data.y_test.tolist() == [0, 1, 0, 1]


def test_npz_x_and_y_split_together(tmp_path):
    x = rows(40)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 3)
    data = load_array_file(tmp_path / "d.npz", seed=0, test_fraction=0.25)
    assert (len(data.x_train), len(data.x_test)) == (30, 10)
    for xs, ys in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        np.testing.assert_array_equal(ys, xs[:, 0].astype(np.int64) % 3)


def test_npz_single_array_of_any_name(tmp_path):
    np.savez(tmp_path / "d.npz", features=rows(10))
    data = load_array_file(tmp_path / "d.npz", seed=0, test_fraction=0.2)
    assert (len(data.x_train), len(data.x_test)) == (8, 2) and data.y_train is None


def test_split_depends_only_on_seed(tmp_path):
    np.save(tmp_path / "x.npy", rows(100))
    first, again, other = (load_array_file(tmp_path / "x.npy", seed=s, test_fraction=0.1) for s in (3, 3, 4))
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)


@pytest.mark.parametrize(
    "text",
    [
        "1,2.5,3\n4,5,-6e-1\n\n7,8,9\n10,11,12\n",
        "a,b,c\n1,2.5,3\n4,5,-6e-1\n7,8,9\n10, 11 ,12\n",
        '\ufeff"x 1",x2,x3\r\n1,2.5,3\r\n4,5,-6e-1\r\n7,8,9\r\n10,11,12\r\n',
    ],
)
def test_csv(tmp_path, text):
    (tmp_path / "d.csv").write_text(text, encoding="utf-8", newline="")
    data = load_array_file(tmp_path / "d.csv", seed=0, test_fraction=0.25)
    together = np.concatenate([data.x_train, data.x_test])
    expected = np.array([[1, 2.5, 3], [4, 5, -0.6], [7, 8, 9], [10, 11, 12]], dtype=np.float32)
    np.testing.assert_array_equal(together[np.argsort(together[:, 0])], expected)
    assert len(data.x_test) == 1 and data.y_train is None


def write(path: Path, content) -> Path:
    """Write text, bytes or an array (as .npy) to ``path``."""
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def corrupt_npz(path: Path) -> bytes:
    np.savez(path, x=rows(10))
    return path.read_bytes()[:-40]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.npy", np.arange(10.0), r"shape \(10,\).*\(n, features\)"),
        ("x.npy", np.array([[1, "a"], [2, None]], dtype=object), "numeric NumPy file.*allow_pickle"),
        ("x.npy", np.array([["a", "b"], ["c", "d"]]), "dtype <U1, not numbers"),
        ("x.npy", np.array([[1.0, np.nan]] * 10), "NaN or infinite"),
        ("x.npy", b"", "numeric NumPy file"),
        ("x.npz", b"PK\3\4 not really a zip", "numeric NumPy file"),
        ("x.npz", corrupt_npz, "numeric NumPy file"),
        ("x.csv", "1,2\n3,oops\n", "line 2, column 2 holds 'oops'"),
        ("x.csv", "a,b\nc,d\n1,2\n", "line 2, column 1 holds 'c'"),
        ("x.csv", "a,b\n1,2\n3\n", "line 3 has 1 columns but the first data row has 2"),
        ("x.csv", "1,2\n3,inf\n5,6\n7,8\n9,10\n", "NaN or infinite"),
        ("x.csv", "", "no data rows"),
        ("x.csv", "a,b\n", "no data rows"),
        ("x.csv", b"1,2\n\xff\xfe,3\n", "UTF-8"),
    ],
)
def test_bad_array_files(tmp_path, name, content, message):
    path = tmp_path / name
    write(path, content(path) if callable(content) else content)
    with pytest.raises(DataError, match=message):
        load_array_file(path, seed=0, test_fraction=0.2)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"a": np.ones((4, 2)), "b": np.ones((4, 2))}, r"holds arrays \['a', 'b'\]; expected x_train and x_test"),
        ({"x_train": np.ones((4, 2)), "x_test": np.ones((2, 2)), "y_train": np.arange(4)}, "only one split"),
        ({"x": np.ones((4, 2)), "y": np.arange(3)}, r"\[y\] has shape \(3,\) but there are 4 examples"),
        ({"x": np.ones((4, 2)), "y": np.ones(4)}, "labels must be integers"),
        ({"x": np.ones((4, 0))}, "empty"),
    ],
)
def test_bad_npz_layouts(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_array_file(tmp_path / "d.npz", seed=0, test_fraction=0.5)


def test_missing_array_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_array_file(tmp_path / "absent.npy", seed=0, test_fraction=0.2)


def test_dispatcher_reads_array_files(tmp_path):
    np.save(tmp_path / "x.npy", rows(10))
    assert load_dataset(str(tmp_path / "x.npy"), seed=0, test_fraction=0.3).x_test.shape == (3, 3)


# ---------------------------------------------------------------- image folders


def save_image(path: Path, value, size=(4, 3), mode="L") -> None:
    """A flat image of ``value`` (an intensity, or an RGB triple) of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_subfolders_become_labels(tmp_path):
    for i in range(3):
        save_image(tmp_path / "cats" / f"{i}.png", 0)
        save_image(tmp_path / "dogs" / "deeper" / f"{i}.PNG", 255)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, seed=0, test_fraction=0.33)
    assert data.shape == (1, 3, 4) and data.binary and data.x_train.dtype == np.float32
    assert (len(data.x_train), len(data.x_test)) == (4, 2)
    for xs, ys in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert ys.dtype == np.int64
        np.testing.assert_array_equal(xs.mean(axis=(1, 2, 3)), ys)  # cats (0) are black, dogs (1) white


def test_images_without_subfolders_have_no_labels_and_mixed_modes_become_rgb(tmp_path):
    save_image(tmp_path / "a.png", 51)
    save_image(tmp_path / "b.jpg", (255, 0, 0), mode="RGB")
    save_image(tmp_path / "c.png", 102)
    data = load_dataset(str(tmp_path), seed=0, test_fraction=0.34)
    assert data.shape == (3, 3, 4) and data.y_train is None
    gray = [x for x in np.concatenate([data.x_train, data.x_test]) if np.ptp(x[:, 0, 0]) == 0]
    assert sorted(round(float(x.mean()), 3) for x in gray) == [0.2, 0.4]


def test_gray_images_keep_one_channel_and_16_bit_scale(tmp_path):
    save_image(tmp_path / "a.png", 51)
    Image.fromarray(np.full((3, 4), 13107, dtype=np.uint16)).save(tmp_path / "b.png")  # 0.2 of 65535
    save_image(tmp_path / "c.png", 1, mode="1")
    data = load_image_folder(tmp_path, seed=0, test_fraction=0.34)
    assert data.shape == (1, 3, 4)
    means = sorted(float(x.mean()) for x in np.concatenate([data.x_train, data.x_test]))
    np.testing.assert_allclose(means, [0.2, 0.2, 1.0], rtol=1e-6)


def test_odd_sized_image(tmp_path):
    save_image(tmp_path / "a.png", 0)
    save_image(tmp_path / "b.png", 0, size=(5, 3))
    with pytest.raises(DataError, match=r"b.png is 5x3 pixels but .*a.png and every image before it is 4x3"):
        load_image_folder(tmp_path, seed=0, test_fraction=0.5)


@pytest.mark.parametrize("damage", [lambda data: b"definitely not a PNG", lambda data: data[: len(data) // 2]])
def test_corrupt_image(tmp_path, damage):
    # Noise, so that half the file cannot hold all the pixels.
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16), dtype=np.uint8)
    for name, pixels in zip(("a.png", "b.png"), noise):
        Image.fromarray(pixels).save(tmp_path / name)
    bad = tmp_path / "b.png"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(DataError, match="b.png cannot be read as an image"):
        load_image_folder(tmp_path, seed=0, test_fraction=0.5)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path, seed=0, test_fraction=0.5)


# Stored pixels (height, width) turned upright as each EXIF orientation says, independently of Pillow.
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def save_oriented(path: Path, pixels: np.ndarray, orientation: int, **options) -> None:
    """``pixels`` saved as they are, tagged with an EXIF orientation (tag 0x0112), as a phone saves its photos."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **options)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_images_are_read_upright_by_their_exif_orientation(tmp_path, orientation):
    stored = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    save_oriented(tmp_path / "a.png", stored, orientation)
    upright = UPRIGHT[orientation](stored)
    Image.fromarray(upright).save(tmp_path / "b.png")  # the same picture, stored upright
    assert scan_images(tmp_path)[1] == (1, *upright.shape)  # from the headers alone
    x, _ = read_images(tmp_path)
    np.testing.assert_array_equal(x[0, 0], upright / np.float32(255))
    np.testing.assert_array_equal(x[0], x[1])


def test_a_phones_photos_turned_sideways_are_one_size_upright(tmp_path):
    # A photo taken upright is stored 60x40 with orientation 6 ("turn 90 degrees clockwise"); beside it one taken
    # sideways (40x60 stored, no tag). Upright, both are 40 wide and 60 high: one size.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = 255  # the left half white: upright, the top half
    save_oriented(tmp_path / "upright.jpg", stored, 6, quality=95)
    Image.new("RGB", (40, 60)).save(tmp_path / "sideways.jpg")
    data = load_image_folder(tmp_path, seed=0, test_fraction=0.5)
    assert data.shape == (3, 60, 40)
    photo = next(x for x in np.concatenate([data.x_train, data.x_test]) if x.max() > 0.5)
    assert photo[:, :28].min() > 0.9 and photo[:, 32:].max() < 0.1


def test_an_image_over_pillows_pixel_limit_is_refused_in_one_line_and_pillow_says_nothing(tmp_path, monkeypatch):
    Image.new("L", (12, 10)).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning of Pillow's that would reach the user fails the test
        for limit in (100, 50):  # 120 pixels: over the limit (Pillow warns), over twice the limit (Pillow refuses)
            monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
            with pytest.raises(
                DataError, match=rf"a.png cannot be read as an image \(more pixels than Pillow's limit of {limit}"
            ):
                load_image_folder(tmp_path, seed=0, test_fraction=0.5)


def test_odd_images_read_as_documented_and_pillow_says_nothing(tmp_path):
    # A palette with transparency (Pillow warns converting it to RGB), gray with alpha, CMYK, 16-bit gray: the
    # alpha and transparency are dropped, CMYK becomes RGB, 16 bits keep their scale; any colour makes three channels.
    palette = Image.new("P", (4, 3))
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    palette.save(tmp_path / "a.png", transparency=bytes([128, 255]))  # entry 0 half transparent
    Image.new("LA", (4, 3), (51, 7)).save(tmp_path / "b.png")
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    Image.fromarray(np.full((3, 4), 13107, dtype=np.uint16)).save(tmp_path / "d.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, files = read_images(tmp_path)
    assert x.shape == (4, 3, 3, 4) and [f.name for f in files] == ["a.png", "b.png", "c.jpg", "d.png"]
    np.testing.assert_array_equal(x[0, :, 0, 0], [1, 0, 0])  # palette entry 0, red, its transparency dropped
    np.testing.assert_allclose(x[1], 0.2)
    np.testing.assert_allclose(x[2, :, 0, 0], [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(x[3], 0.2, rtol=1e-6)


def test_a_gzipped_idx_file_is_inflated_no_further_than_its_header_promises(tmp_path):
    import tracemalloc

    from aekit.data.idx import read_idx_file

    # 2 GiB of zeros in 2 MB of gzip members, behind a header promising 2x3 bytes.
    header = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3])
    bomb = tmp_path / "bomb-idx2-ubyte.gz"
    bomb.write_bytes(gzip.compress(header + bytes(1 << 24), mtime=0) + gzip.compress(bytes(1 << 24), mtime=0) * 127)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompresses to more than 18 bytes"):
            read_idx_file(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


def test_a_uint8_or_float32_npy_is_memory_mapped_and_split_without_a_copy(tmp_path):
    rng = np.random.default_rng(0)
    for name, x in (
        ("u8.npy", rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)),
        ("f32.npy", rng.normal(size=(50, 6)).astype(np.float32)),
    ):
        np.save(tmp_path / name, x)
        data = load_array_file(tmp_path / name, seed=3, test_fraction=0.2)
        assert isinstance(data.x_train, IndexedRows) and isinstance(data.x_train.base, np.memmap)
        assert data.x_train.dtype == x.dtype and data.x_train.nbytes == 40 * x[0].nbytes
        train, test = split_indices(50, seed=3, test_fraction=0.2)  # the split load_dataset has always made
        flat = x.reshape(50, *data.shape)
        np.testing.assert_array_equal(np.asarray(data.x_train), flat[train])
        np.testing.assert_array_equal(data.x_test[[2, 0, 1]], flat[test[[2, 0, 1]]])
    np.save(tmp_path / "f64.npy", rng.normal(size=(50, 6)))  # another type is read whole, as float32
    assert load_array_file(tmp_path / "f64.npy", seed=3, test_fraction=0.2).x_train.dtype == np.float32


def test_a_folder_of_pngs_gives_images_whose_names_clash_their_whole_names(tmp_path):
    from aekit.data.files import png_names, write_examples

    assert png_names(["a.jpg", "sub/b.tif", "c"]) == [Path("a.png"), Path("sub/b.png"), Path("c.png")]
    assert png_names(["a.jpg", "a.png", "b.jpg"]) == [Path("a.jpg.png"), Path("a.png.png"), Path("b.png")]
    with pytest.raises(DataError, match=r"two images would be written to a.jpg.png; rename one"):
        png_names(["a.jpg", "a.png", "a.jpg.png"])
    x = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.0, 1.0)])
    write_examples(tmp_path / "out", x, ["a.jpg", "a.png"])  # before, the second was written over the first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.png", "a.png.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "a.png.png")).max() == 255


# ---------------------------------------------------------------- one table of sources


def _one_of_each_source(folder: Path) -> dict[str, str]:
    """A small source of each kind in aekit.data.sources.SOURCES but mnist (70,000 examples: tests/data/test_store.py
    packs it), by kind."""
    from aekit.data.files import idx_bytes as write_idx
    from aekit.data.store.writer import pack

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    for label in ("a", "b"):
        (folder / "images" / label).mkdir(parents=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / "images" / "ab"[i % 2] / f"{i:02d}.png")
    real = rng.normal(size=(10, 3)).astype(np.float32)
    np.save(folder / "x.npy", real)
    np.savez(folder / "x.npz", x_train=pixels[:8], x_test=pixels[8:], y_train=np.arange(8) % 3, y_test=np.arange(4))
    np.savetxt(folder / "x.csv", real, delimiter=",")
    (folder / "x-ubyte").write_bytes(write_idx(pixels))
    pack(str(folder / "x.npy"), folder / "x.store", workers=1, seed=1, test_fraction=0.3, progress=False)
    found = {kind: str(folder / name) for kind, name in (("images", "images"), ("store", "x.store"))}
    found.update({kind: str(folder / f"x.{kind}") for kind in ("npy", "npz", "csv")})
    found.update(idx=str(folder / "x-ubyte"), digits="digits")
    return found


def test_every_source_in_the_table_loads_and_packs_to_the_same_examples(tmp_path):
    """load_dataset and aekit pack draw on one table (aekit.data.sources): every kind in it is read by both, the
    store holding the loaded examples, labels and split; a store is refused by the packer and loaded as it was
    packed."""
    from aekit.data.sources import SOURCES
    from aekit.data.store import SOURCE_KINDS, read_manifest
    from aekit.data.store.writer import pack

    sources = _one_of_each_source(tmp_path)
    assert set(sources) | {"mnist"} == {source.kind for source in SOURCES}
    assert {source.kind for source in SOURCES} - {"store"} <= set(SOURCE_KINDS)
    for kind, source in sources.items():
        options = {"seed": 1, "test_fraction": 0.3}
        if kind == "store":  # refused by the packer; loaded as the store of x.npy it is
            with pytest.raises(DataError, match="already a store"):
                pack(source, tmp_path / "again.store", workers=1, progress=False, **options)
            store, loaded = Path(source), load_dataset(str(tmp_path / "x.npy"), **options)
        else:
            store, loaded = tmp_path / f"{kind}.store", load_dataset(source, **options)
            pack(source, store, workers=1, progress=False, **options)
        packed, manifest = load_dataset(str(store)), read_manifest(store)
        assert packed.shape == loaded.shape and packed.binary == loaded.binary, kind
        # A store holds each split in increasing source order, the loader in the order of the seeded split.
        seeded = split_indices(manifest["n"], seed=1, test_fraction=0.3) if manifest["split"] == "seeded" else None
        for k, split in enumerate(("train", "test")):
            order = slice(None) if seeded is None else np.argsort(seeded[k])
            np.testing.assert_allclose(
                as_float32(getattr(packed, f"x_{split}")),
                as_float32(getattr(loaded, f"x_{split}"))[order],
                rtol=1e-6,
                err_msg=kind,
            )
            labels = getattr(loaded, f"y_{split}")
            assert (labels is None) == (getattr(packed, f"y_{split}") is None), kind
            if labels is not None:
                np.testing.assert_array_equal(getattr(packed, f"y_{split}"), labels[order], err_msg=kind)


def test_a_source_added_to_the_table_is_loaded_and_packed(tmp_path, monkeypatch):
    """One entry of the table serves both: a kind added to SOURCES is loaded by load_dataset and packed by aekit
    pack, with no other change."""
    from aekit.data import sources
    from aekit.data.store.writer import pack

    digits = next(source for source in sources.SOURCES if source.kind == "digits")
    added = sources.Source("digits", lambda source: source == "my-digits", digits.load, digits.plan)
    monkeypatch.setattr(sources, "SOURCES", (added, *sources.SOURCES))
    loaded = load_dataset("my-digits", seed=2, test_fraction=0.25)
    manifest = pack("my-digits", tmp_path / "d.store", workers=1, seed=2, test_fraction=0.25, progress=False)
    assert manifest["source"]["kind"] == "digits" and manifest["n_test"] == len(loaded.x_test)
    order = np.argsort(split_indices(manifest["n"], seed=2, test_fraction=0.25)[1])
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "d.store")).x_test, loaded.x_test[order])
    with pytest.raises(DataError, match="unknown dataset 'my-digits'"):
        monkeypatch.undo()
        load_dataset("my-digits")
