"""The store's format: any source packed once (``aekit pack``, :mod:`aekit.data.store.writer`) into one memory-mapped
array and a manifest, read by :mod:`aekit.data.store.reader`.

Format ``aekit-store``, version 2 (examples of one shape; version 3, images of their own sizes, below): a folder
``STORE/`` holding

    file              content
    examples.npy      every example, one .npy array of shape (n, *shape), C order, in the data's natural type:
                      uint8 8-bit intensities (images, IDX and uint8 arrays; models divide them by 255), else
                      float32 (booleans as 0/1; 16-bit PNGs divided by 65535). Rows are the training split (in
                      increasing source order), then the test split (likewise): x_train = examples[:n_train] and
                      x_test = examples[n_train:] are memory-mapped slices, nothing copied.
    labels.npy        int64 (n,), the same order; only where the source has labels.
    split.npz         ``train`` and ``test``: int64 indices into the source's order of the rows of each split, i.e.
                      row k of the store is source row concatenate([train, test])[k] (sources that come split,
                      mnist and .npz with x_train/x_test, count x_train's rows then x_test's).
    statistics.npz    float64 arrays of one example's shape over the training split, as models see the values
                      (uint8 / 255): ``mean``, ``std`` (population, ddof 0), ``min``, ``max``.
    listing.json      the source's files as packed, one a line: [relative name, size, mtime_ns, CRC-32 of the
                      content as 8 hex digits, or null where it could not be read]; only where the source is files
                      (not digits or mnist). The CRC (zlib's, as PNG and zip use) tells whether a file whose time
                      changed holds what it held; it takes a third of sha256's time, and a pack computes it for
                      every source file.
    manifest.json     written last (see below).

``manifest.json`` is JSON with sorted keys and no timestamps, so one source packed twice gives byte-identical
stores. Its fields: ``format`` ("aekit-store"), ``version`` (2), ``name`` (the dataset's name), ``shape`` (one
example's), ``dtype`` ("uint8" or "float32"), ``binary`` (intensities in [0, 1], else real values), ``scale``
(:data:`SCALES`), ``n``, ``n_train``, ``n_test``, ``split`` ("seeded" or "given"), ``seed`` and ``test_fraction``
(null when given), ``bounds`` (the training split's smallest and largest value as models see them), ``labels``
(whether labels.npy exists), ``label_names`` (class names by number, or null), ``anomaly_labels`` (true, written only
where the labels mark anomalies, 1, and normal rows, 0, rather than classes: a table's, see
:func:`aekit.data.arrays.load_array_file`; a store without it holds class labels, as every store before it did),
``skipped`` (unreadable images and subfolders left out by ``--skip-bad``, relative names, a folder's ending in "/"),
``source`` (``kind``, absolute ``path`` or null, ``listing_sha256``: sha256 of the source's listing, i.e. the sorted
[relative name, size, mtime_ns] of each file read, or null, and ``sha256``: the published digests of mnist's four files,
else null), ``files`` (for each file above but the manifest: ``size`` in bytes and ``sha256``; examples.npy also
``sampled``: the sha256 of its header and of blocks of ``block_size`` bytes at ``offsets``, see :func:`sampled_offsets`)
and ``id`` (sha256 of every other field, see :func:`store_id`). A version 1 store (before listing.json) still opens: its
id covers its files' digests alone, so an edit of its other fields goes unseen, and a source that changed in time alone
is taken as changed.

Version 3 is a folder of images of mixed sizes packed with each image at its own size (``--patch`` training crops
them; a command that needs one shape refuses the store). It differs from version 2 in three things alone:
``shape`` is [channels], the part of the shape every example shares (1 where every image is grey, else 3, as an
image folder is read); examples.npy is one flat array of shape (total,) holding each example's (channels, height,
width) values in C order, one after the other in the row order above (:func:`example_offsets` says where each
starts); and one more data file, ``sizes.npy``, int64 (n, 2), each example's height and width in that order. Its
statistics are per channel, over every pixel of the training split: arrays of shape [channels]. A folder whose
images share one size is packed as version 2, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from aekit.errors import DataError

FORMAT = "aekit-store"
VERSION = 2
# A store of images at their own sizes (a ragged store, see above).
RAGGED = 3
# Versions read: 1, written before the id covered the whole manifest and before listing.json (see store_id).
VERSIONS = (1, 2, RAGGED)
MANIFEST = "manifest.json"
EXAMPLES = "examples.npy"
LABELS = "labels.npy"
SPLIT = "split.npz"
STATISTICS = "statistics.npz"
LISTING = "listing.json"
SIZES = "sizes.npy"
# The files that hold a store's data (see data_digest).
DATA_FILES = (EXAMPLES, LABELS, SPLIT, STATISTICS, SIZES)
SCALES = {"uint8": "intensity: uint8 / 255", "binary": "intensity: values in [0, 1]", "real": "real values"}
SOURCE_KINDS = ("images", "npy", "npz", "csv", "idx", "digits", "mnist")
# Sampled digest of examples.npy: this many blocks of this many bytes, spread evenly over its values.
SAMPLED_BLOCKS = 64
BLOCK_SIZE = 1 << 16
# The largest manifest read: it lists skipped files, so it grows with a bad folder, but never this far.
MAX_MANIFEST_BYTES = 256 << 20
_READ = 1 << 20


def fix(store: str | Path) -> str:
    return f"delete it and pack it again with `aekit pack SOURCE --out {store}`"


def _refuse(store: str | Path, problem: str) -> DataError:
    return DataError(f"store {store}: {problem}; {fix(store)}")


def example_offsets(sizes: np.ndarray, channels: int) -> np.ndarray:
    """Where each example of a ragged store starts in its flat examples.npy, in values, and where the last ends: the
    n + 1 running sums of channels x height x width of ``sizes`` (n, 2)."""
    return np.concatenate([[0], np.cumsum(channels * sizes[:, 0] * sizes[:, 1], dtype=np.int64)])


# --- digests -------------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def sampled_offsets(size: int, data_offset: int) -> list[int]:
    """Where the sampled blocks of an examples.npy of ``size`` bytes whose values start at ``data_offset`` lie:
    every block of the values where they fit in :data:`SAMPLED_BLOCKS` blocks, else that many spread evenly from
    the first value to the last."""
    data = size - data_offset
    if data <= SAMPLED_BLOCKS * BLOCK_SIZE:
        return [data_offset + k * BLOCK_SIZE for k in range(math.ceil(data / BLOCK_SIZE))]
    return [data_offset + (data - BLOCK_SIZE) * i // (SAMPLED_BLOCKS - 1) for i in range(SAMPLED_BLOCKS)]


def sampled_sha256(path: Path, data_offset: int, offsets: list[int]) -> str:
    """sha256 of the header (the bytes before ``data_offset``) and of the blocks at ``offsets``, in that order."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        digest.update(file.read(data_offset))
        for offset in offsets:
            file.seek(offset)
            digest.update(file.read(BLOCK_SIZE))
    return digest.hexdigest()


def data_digest(manifest: dict) -> str:
    """What identifies a store's data: sha256 of its ``binary`` flag and the sha256 of each file that holds the data
    (:data:`DATA_FILES`), as sorted JSON. Two stores of the same data in the same split share it whatever their
    source's place, times or name (a source copied back and packed again), where their ids differ."""
    fields = {name: entry["sha256"] for name, entry in manifest["files"].items() if name in DATA_FILES}
    return hashlib.sha256(json.dumps({**fields, "binary": manifest["binary"]}, sort_keys=True).encode()).hexdigest()


def store_id(manifest: dict) -> str:
    """The store's id: sha256 of every other field of its manifest as compact JSON with sorted keys, so an edit of any
    field (its files' digests among them) changes it. A version 1 store's id is the sha256 of the sorted {file name:
    sha256} of its files alone: its other fields are taken as written."""
    if manifest["version"] == 1:
        digests = {name: entry["sha256"] for name, entry in manifest["files"].items()}
        return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    fields = {key: value for key, value in manifest.items() if key != "id"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def listing_sha256(entries: list[tuple[str, int, int]]) -> str:
    """sha256 of a source's listing: its files' [relative name, size, mtime_ns], sorted."""
    # Each line is json.dumps([name, size, mtime_ns]), written out: the same text in a third of the time.
    text = "\n".join(f"[{json.dumps(name)}, {size}, {mtime}]" for name, size, mtime in sorted(entries))
    return hashlib.sha256(text.encode()).hexdigest()


def source_entries(kind: str, path: Path) -> list[tuple[str, int, int]]:
    """A source's files on disk now, as (relative name, size, mtime_ns): an image folder's images, or the one file."""
    if kind == "images":
        from aekit.data.images import image_listing

        # A subfolder that cannot be read is left out, as a pack with --skip-bad left it out (without, it refused).
        return image_listing(path, unreadable={})
    stat = path.stat()
    return [(path.name, stat.st_size, stat.st_mtime_ns)]


def source_files(kind: str, path: Path, names: list[str]) -> list[str]:
    """The files of a source's entries ``names``: the images of those names in the folder ``path``, or the file
    ``path``."""
    folder = os.path.join(path, "")
    return [folder + name if kind == "images" else str(path) for name in names]


def content_crc32(path: str | Path) -> str | None:
    """The CRC-32 of a source file's bytes as 8 hex digits, or None where it cannot be read."""
    # os.read without a file object: about 10 us less a small image, of which a pack reads thousands.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    crc = 0
    try:
        while block := os.read(fd, _READ):
            crc = zlib.crc32(block, crc)
    except OSError:
        return None
    finally:
        os.close(fd)
    return crc32_text(crc)


def crc32_text(crc: int) -> str:
    """A CRC-32 as listing.json writes it: 8 hex digits."""
    return f"{crc:08x}"


def listing_bytes(listing: list[list]) -> bytes:
    """listing.json: the [relative name, size, mtime_ns, CRC-32 or null] of each source file, one a line."""
    # Each line is json.dumps(entry) without spaces, written out: a third of the time.
    lines = (f"[{json.dumps(name)},{size},{mtime},{json.dumps(crc)}]" for name, size, mtime, crc in listing)
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


# --- deterministic .npz -----------------------------------------------------------------------------------------------


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (readable by np.load) of ``arrays`` with fixed dates and order, so equal arrays give equal
    bytes (numpy.savez stamps each member with the time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _is_int(value, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_hex(value, digits: int = 64) -> bool:
    return type(value) is str and len(value) == digits and all(c in "0123456789abcdef" for c in value)


_KEYS = {
    "format",
    "version",
    "name",
    "shape",
    "dtype",
    "binary",
    "scale",
    "n",
    "n_train",
    "n_test",
    "split",
    "seed",
    "test_fraction",
    "bounds",
    "labels",
    "label_names",
    "skipped",
    "source",
    "files",
    "id",
}
_SOURCE_KEYS = {"kind", "path", "listing_sha256", "sha256"}
# Written only where the labels mark anomalies: its absence means class labels (stores packed before it included).
ANOMALY_LABELS = "anomaly_labels"


def labels_mark_anomalies(manifest: dict) -> bool:
    """Whether a store's labels mark anomalies (1) and normal examples (0) rather than classes."""
    return manifest.get(ANOMALY_LABELS, False)


def manifest_problem(m) -> str | None:
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(m, dict):
        return "is not a JSON object"
    if m.get("format") != FORMAT:
        return f"has format {m.get('format')!r}, not {FORMAT!r}"
    if m.get("version") not in VERSIONS:
        return f"has version {m.get('version')!r}; this aekit reads versions {', '.join(map(str, VERSIONS))}"
    if not _KEYS <= set(m) <= _KEYS | {ANOMALY_LABELS}:
        missing, extra = sorted(_KEYS - set(m)), sorted(set(m) - _KEYS - {ANOMALY_LABELS})
        return f"lacks {missing}" if missing else f"has unknown fields {extra}"
    return _examples_problem(m) or _source_problem(m["source"]) or _files_problem(m)


def _examples_problem(m: dict) -> str | None:
    """What is wrong with a manifest's description of the examples (shape, type, scale, counts, split, labels)."""
    if type(m["name"]) is not str or not m["name"]:
        return "has no name"
    if (
        type(m["shape"]) is not list
        or not m["shape"]
        or not all(_is_int(d, 1) for d in m["shape"])
        or len(m["shape"]) > 8
    ):
        return f"has shape {m['shape']!r}, not a list of positive whole numbers"
    if m["version"] == RAGGED and len(m["shape"]) != 1:
        return f"has shape {m['shape']!r}, not [channels] as a store of images at their own sizes has"
    if m["dtype"] not in ("uint8", "float32"):
        return f"has dtype {m['dtype']!r}, not uint8 or float32"
    if type(m["binary"]) is not bool or (m["dtype"] == "uint8" and not m["binary"]):
        return f"has binary {m['binary']!r}, not true or false (true for uint8)"
    scale = SCALES["uint8" if m["dtype"] == "uint8" else "binary" if m["binary"] else "real"]
    if m["scale"] != scale:
        return f"has scale {m['scale']!r} where its dtype and binary flag say {scale!r}"
    if not (
        _is_int(m["n_train"], 1)
        and _is_int(m["n_test"], 1)
        and _is_int(m["n"], 2)
        and m["n"] == m["n_train"] + m["n_test"]
    ):
        return f"has n {m['n']!r}, n_train {m['n_train']!r} and n_test {m['n_test']!r}, not counts that add up"
    if m["split"] == "seeded":
        if not _is_int(m["seed"]) or not _is_real(m["test_fraction"]) or not 0 < m["test_fraction"] < 1:
            return f"has seed {m['seed']!r} and test fraction {m['test_fraction']!r} for a seeded split"
    elif m["split"] != "given" or m["seed"] is not None or m["test_fraction"] is not None:
        return f"has split {m['split']!r}, not 'seeded' or 'given' (with null seed and test fraction)"
    bounds = m["bounds"]
    if (
        type(bounds) is not list
        or len(bounds) != 2
        or not all(map(_is_real, bounds))
        or bounds[0] > bounds[1]
        or (m["binary"] and (bounds[0] < 0 or bounds[1] > 1))
    ):
        return f"has bounds {bounds!r}, not [low, high]{' within [0, 1]' if m['binary'] else ''}"
    if type(m["labels"]) is not bool:
        return f"has labels {m['labels']!r}, not true or false"
    names = m["label_names"]
    if names is not None and (not m["labels"] or type(names) is not list or not all(type(x) is str for x in names)):
        return f"has label names {names!r}, not null or a list of names of a store with labels"
    if ANOMALY_LABELS in m and (m[ANOMALY_LABELS] is not True or not m["labels"] or names is not None):
        return f"has anomaly_labels {m[ANOMALY_LABELS]!r}, not true on a store of labels without names"
    if type(m["skipped"]) is not list or not all(type(x) is str for x in m["skipped"]):
        return f"has skipped {m['skipped']!r}, not a list of file names"
    return None


def _source_problem(source) -> str | None:
    """What is wrong with a manifest's record of its source, or None."""
    if not isinstance(source, dict) or set(source) != _SOURCE_KEYS or source["kind"] not in SOURCE_KINDS:
        return f"has source {source!r}, not an object with {sorted(_SOURCE_KEYS)} of a known kind"
    if source["path"] is not None and type(source["path"]) is not str:
        return f"has source path {source['path']!r}, not a path or null"
    if source["listing_sha256"] is not None and not _is_hex(source["listing_sha256"]):
        return f"has source listing digest {source['listing_sha256']!r}, not a sha256"
    if source["sha256"] is not None and (
        not isinstance(source["sha256"], dict) or not all(map(_is_hex, source["sha256"].values()))
    ):
        return f"has source digests {source['sha256']!r}, not sha256s by file name"
    return None


def _files_problem(m: dict) -> str | None:
    """What is wrong with a manifest's list of files and their digests, and its id, or None."""
    files = m["files"]
    listed = m["version"] >= 2 and m["source"]["listing_sha256"] is not None
    expected = {EXAMPLES, SPLIT, STATISTICS} | ({LABELS} if m["labels"] else set()) | ({LISTING} if listed else set())
    expected |= {SIZES} if m["version"] == RAGGED else set()
    if not isinstance(files, dict) or set(files) != expected:
        return f"lists files {sorted(files) if isinstance(files, dict) else files!r}, not {sorted(expected)}"
    for name, entry in files.items():
        keys = {"size", "sha256", "sampled"} if name == EXAMPLES else {"size", "sha256"}
        if (
            not isinstance(entry, dict)
            or set(entry) != keys
            or not _is_int(entry["size"])
            or not _is_hex(entry["sha256"])
        ):
            return f"has entry {entry!r} for {name}, not its size and sha256"
    sampled = files[EXAMPLES]["sampled"]
    if (
        not isinstance(sampled, dict)
        or set(sampled) != {"sha256", "block_size", "offsets"}
        or not _is_hex(sampled["sha256"])
        or sampled["block_size"] != BLOCK_SIZE
        or type(sampled["offsets"]) is not list
        or not all(_is_int(o) for o in sampled["offsets"])
    ):
        return f"has sampled digest {sampled!r}, not a sha256, block size {BLOCK_SIZE} and offsets"
    if not _is_hex(m["id"]):
        return f"has id {m['id']!r}, not a sha256"
    return None
