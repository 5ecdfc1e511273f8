"""MNIST from its four IDX files: read from a folder, or downloaded once into a cache, always sha256-checked."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO

import numpy as np

from aekit.data.dataset import Dataset
from aekit.data.idx import gunzip, read_bytes, read_idx
from aekit.errors import DataError

# sha256 of each decompressed file, so a gzipped and a plain copy verify alike.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Bytes of the largest of them (train images) decompressed: a .gz inflating to more is refused right there.
MAX_SIZE = 47_040_016

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

DOWNLOAD_TIMEOUT_S = 60


def load_mnist(data_dir: str | Path | None = None, mirrors: list[str] | None = None) -> Dataset:
    """The 60,000 training and 10,000 test digits as (1, 28, 28) intensities in [0, 1], with int64 labels.

    With ``data_dir`` the four files are read from that folder (each as ``NAME.gz`` or plain ``NAME``).
    Otherwise they come from the cache folder (``$AEKIT_DATA/mnist``, else ``~/.cache/aekit/mnist``),
    downloaded there first if missing or damaged, trying each mirror in turn: ``mirrors``, else the
    comma-separated base URLs in ``$AEKIT_MNIST_MIRRORS``, else ``DEFAULT_MIRRORS``.
    """
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(
                f"--data-dir {folder} is not a folder; point it to the folder holding the four MNIST IDX files"
            )
        files = {name: _read_local(folder, name) for name in SHA256}
    else:
        folder = cache_dir()
        urls = _mirror_list(mirrors)
        files = {name: _read_cached(folder, name) or _download(folder, name, urls) for name in SHA256}
    x_train, y_train = _examples(files, "train")
    x_test, y_test = _examples(files, "t10k")
    return Dataset("mnist", x_train, x_test, y_train, y_test, binary=True)


def cache_dir() -> Path:
    """Where downloaded MNIST files are kept."""
    root = os.environ.get("AEKIT_DATA")
    return (Path(root) if root else Path.home() / ".cache" / "aekit") / "mnist"


def _mirror_list(mirrors: list[str] | None) -> list[str]:
    if mirrors is not None:
        return mirrors
    from_env = os.environ.get("AEKIT_MNIST_MIRRORS", "")
    return [url.strip() for url in from_env.split(",") if url.strip()] or list(DEFAULT_MIRRORS)


def _checksum_problem(data: bytes, name: str) -> str | None:
    """Why ``data`` is not the published ``name``, or None when its sha256 matches."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == SHA256[name]:
        return None
    return f"sha256 {digest} does not match the published {SHA256[name]} of {name}"


def _read_local(folder: Path, name: str) -> tuple[bytes, str]:
    """The verified contents of ``name`` (gzipped or not) in ``folder`` and the path they came from."""
    path = next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
    if path is None:
        raise DataError(
            f"{folder / name}.gz is missing (nor is there a plain {name}); --data-dir must hold the "
            f"four MNIST IDX files {', '.join(SHA256)}, gzipped or not"
        )
    data = read_bytes(path, MAX_SIZE)
    problem = _checksum_problem(data, name)
    if problem:
        raise DataError(f"{path} is damaged or not the original MNIST file ({problem}); replace it with a fresh copy")
    return data, str(path)


def _read_cached(folder: Path, name: str) -> tuple[bytes, str] | None:
    """The verified contents of a cached file, or None when it is absent or damaged (so it is fetched again)."""
    try:
        return _read_local(folder, name)
    except DataError:
        return None


def _download(folder: Path, name: str, mirrors: list[str]) -> tuple[bytes, str]:
    """Fetch ``name.gz`` from the first mirror that serves a verified copy, cache it and return its contents.

    The bytes land in a temporary file beside the final one and are renamed onto it only once verified, so
    the final name never holds a partial or tampered file, not even after a crash.
    """
    if not mirrors:
        raise DataError(
            f"{name} is not in the cache and no mirror was given to download it from; name one, or "
            "pass --data-dir with a local copy"
        )
    target = folder / f"{name}.gz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
    except OSError as error:
        raise DataError(
            f"cannot write to the MNIST cache folder {folder} ({error.strerror}); set AEKIT_DATA to a "
            "writable folder, or pass --data-dir with a local copy"
        ) from None
    failures = []
    try:
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                data = _fetch_verified(url, name, Path(partial))
            except DataError as error:
                failures.append(str(error))
                continue
            os.replace(partial, target)
            return data, str(target)
    finally:
        Path(partial).unlink(missing_ok=True)
    raise DataError(
        f"could not get {name}.gz from any mirror: {'; '.join(failures)}; download the four MNIST "
        "files yourself and pass --data-dir with the folder that holds them"
    )


def _fetch_verified(url: str, name: str, partial: Path) -> bytes:
    """Download ``url`` into ``partial`` and return the decompressed contents once their sha256 matches."""
    with partial.open("wb") as out:
        _fetch(url, out)
    data = gunzip(partial.read_bytes(), url, MAX_SIZE)
    problem = _checksum_problem(data, name)
    if problem:
        raise DataError(f"{url}: {problem}")
    return data


def _fetch(url: str, out: BinaryIO) -> None:
    """Copy the body at ``url`` into ``out``; any network failure is a DataError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
    except (OSError, ValueError, http.client.HTTPException) as error:
        # URLError, timeouts and refused connections are OSErrors; a malformed mirror URL is a ValueError.
        raise DataError(f"{url}: download failed ({error})") from None


def _examples(files: dict[str, tuple[bytes, str]], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images of one split as float32 (n, 1, 28, 28) in [0, 1] and their int64 labels."""
    images = read_idx(*files[f"{split}-images-idx3-ubyte"])
    labels = read_idx(*files[f"{split}-labels-idx1-ubyte"])
    if len(images) != len(labels):
        raise DataError(
            f"MNIST {split} has {len(images)} images but {len(labels)} labels; the files do not "
            "belong together, replace them with fresh copies"
        )
    x = images.astype(np.float32)[:, None]
    x /= 255
    return x, labels.astype(np.int64)
