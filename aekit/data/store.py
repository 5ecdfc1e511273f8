"""A store: any source packed once (``aekit pack``, :mod:`aekit.pack`) into one memory-mapped array and a manifest.

Format ``aekit-store``, version 2: a folder ``STORE/`` holding

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
(whether labels.npy exists), ``label_names`` (class names by number, or null), ``skipped`` (unreadable images and
subfolders left out by ``--skip-bad``, relative names, a folder's ending in "/"), ``source`` (``kind``, absolute
``path`` or null, ``listing_sha256``: sha256 of the source's listing, i.e. the sorted [relative name, size, mtime_ns]
of each file read, or null, and ``sha256``: the published digests of mnist's four files, else null), ``files`` (for
each file above but the manifest: ``size`` in bytes and ``sha256``; examples.npy also ``sampled``: the sha256 of its
header and of blocks of ``block_size`` bytes at ``offsets``, see :func:`sampled_offsets`) and ``id`` (sha256 of every
other field, see :func:`store_id`). A version 1 store (before listing.json) still opens: its id covers its files'
digests alone, so an edit of its other fields goes unseen, and a source that changed in time alone is taken as changed.

A folder is a store when its manifest.json says ``"format": "aekit-store"`` (:func:`is_store`): a folder of images
holding a manifest.json of its own (a web export, a downloaded data set) is not one. Opening (:func:`open_store`)
checks, without reading the whole array: every manifest field's type, each file's size, examples.npy's header against
the manifest's shape and dtype, its sampled sha256, the other files' full sha256 (listing.json's where it is read),
the manifest's counts and bounds against split.npz and statistics.npz, and the id. A store whose source still exists
but has changed (files added or removed, a file of another size or content) is refused too; a file whose time alone
changed (``touch``, ``cp -r`` of a backup) is read again and compared with listing.json, and a copy whose source is
gone opens. Any failure is one :class:`DataError` line naming the store and the fix. :func:`verify_store` also reads
examples.npy and listing.json whole to check their full sha256 (``aekit pack --verify STORE``).
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

from aekit.data.dataset import Dataset
from aekit.errors import DataError

FORMAT = "aekit-store"
VERSION = 2
# Versions read: 1, written before the id covered the whole manifest and before listing.json (see store_id).
VERSIONS = (1, 2)
MANIFEST = "manifest.json"
EXAMPLES = "examples.npy"
LABELS = "labels.npy"
SPLIT = "split.npz"
STATISTICS = "statistics.npz"
LISTING = "listing.json"
# The files that hold a store's data (see data_digest).
DATA_FILES = (EXAMPLES, LABELS, SPLIT, STATISTICS)
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
    return f"{crc:08x}"


def listing_bytes(listing: list[list]) -> bytes:
    """listing.json: the [relative name, size, mtime_ns, CRC-32 or null] of each source file, one a line."""
    # Each line is json.dumps(entry) without spaces, written out: a third of the time.
    lines = (f"[{json.dumps(name)},{size},{mtime},{json.dumps(crc)}]" for name, size, mtime, crc in listing)
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


# --- .npy headers and deterministic .npz ---------------------------------------------------------------------------


class NpyHeader:
    """What an .npy file's header says: ``shape``, ``dtype``, ``fortran`` order and where the values start."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, offset: int):
        self.shape, self.dtype, self.fortran, self.offset = shape, dtype, fortran, offset


def read_npy_header(file, size: int) -> NpyHeader:
    """The header of the .npy file open in ``file`` (``size`` bytes), checked against the bytes that follow it
    before anything of the size it claims is allocated (as :func:`aekit.data.arrays.read_numpy` does); a damaged or
    lying header raises ValueError with the reason."""
    try:
        version = np.lib.format.read_magic(file)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version[0]}.{version[1]}")
        header_size = int.from_bytes(file.read(2 if version == (1, 0) else 4), "little")
        if header_size > size - file.tell():
            raise ValueError(f"its header length field claims {header_size} bytes but {size - file.tell()} follow")
        file.seek(0)
        np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(file)
    except ValueError:
        raise
    except (OSError, EOFError, SyntaxError, TypeError, KeyError, RuntimeError) as error:
        raise ValueError(" ".join(str(error).split()) or type(error).__name__) from None
    if any(type(d) is not int or d < 0 for d in shape):
        raise ValueError(f"its header gives shape {shape}, not whole numbers >= 0")
    offset = file.tell()
    if not dtype.hasobject and math.prod(shape) * dtype.itemsize > size - offset:
        raise ValueError(
            f"its header promises shape {shape} of {dtype} ({math.prod(shape) * dtype.itemsize} bytes) "
            f"but {size - offset} bytes follow"
        )
    return NpyHeader(tuple(shape), dtype, bool(fortran), offset)


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


# --- opening -------------------------------------------------------------------------------------------------------


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a store: its manifest.json says ``"format": "aekit-store"``, or, where
    the manifest cannot be read as JSON (damaged), it lies beside examples.npy. A folder with a manifest.json of
    another kind (a web export, a downloaded data set) is not a store."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return False
    try:
        with (path / MANIFEST).open("rb") as file:
            manifest = json.loads(file.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return (path / EXAMPLES).is_file()
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def open_store(path: str | Path) -> Dataset:
    """The store in ``path`` as a :class:`Dataset`: memory-mapped slices of examples.npy (nothing copied), its
    labels, ``bounds``, ``store_id`` and ``digest`` (:func:`data_digest`) from the manifest and ``checked`` (its
    values were checked when it was packed), after the checks in this module's docstring."""
    store = Path(path)
    manifest = read_manifest(store)
    _check_files(store, manifest)
    _check_contents(store, manifest)
    # After the files and contents, whose checks name what differs: an edit they cannot see changes the id.
    if manifest["id"] != store_id(manifest):
        what = "its files' digests" if manifest["version"] == 1 else "its other fields"
        raise _refuse(store, f"{MANIFEST} has id {manifest['id']}, not the digest of {what} (the manifest was edited)")
    _check_source(store, manifest)
    examples = np.load(store / EXAMPLES, mmap_mode="r")
    n_train = manifest["n_train"]
    y_train = y_test = None
    if manifest["labels"]:
        labels = _read(store, LABELS)["x"]
        if labels.shape != (manifest["n"],) or labels.dtype != np.int64:
            raise _refuse(store, f"{LABELS} holds {labels.dtype} {labels.shape}, not int64 ({manifest['n']},)")
        y_train, y_test = labels[:n_train], labels[n_train:]
    return Dataset(
        manifest["name"],
        examples[:n_train],
        examples[n_train:],
        y_train,
        y_test,
        binary=manifest["binary"],
        label_names=None if manifest["label_names"] is None else tuple(manifest["label_names"]),
        bounds=tuple(manifest["bounds"]),
        checked=True,
        store_id=manifest["id"],
        digest=data_digest(manifest),
    )


def verify_store(path: str | Path) -> dict:
    """:func:`open_store`'s checks, listing.json's and the full sha256 of examples.npy (which reads it whole);
    returns the manifest."""
    store = Path(path)
    open_store(store)
    manifest = read_manifest(store)
    if LISTING in manifest["files"]:
        _listing(store, manifest)
    digest = file_sha256(store / EXAMPLES)
    if digest != manifest["files"][EXAMPLES]["sha256"]:
        raise _refuse(
            store,
            f"{EXAMPLES} has sha256 {digest}, not the {manifest['files'][EXAMPLES]['sha256']} "
            "it was packed with: it was changed or damaged",
        )
    return manifest


def read_manifest(store: Path) -> dict:
    """The manifest of ``store``, every field checked for its type and consistency."""
    path = store / MANIFEST
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise _refuse(store, f"{MANIFEST} cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise _refuse(store, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes, not a store's manifest")
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _refuse(store, f"{MANIFEST} is not valid JSON ({' '.join(str(error).split())})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise _refuse(store, f"{MANIFEST} {problem}")
    return manifest


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


def _manifest_problem(m) -> str | None:
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(m, dict):
        return "is not a JSON object"
    if m.get("format") != FORMAT:
        return f"has format {m.get('format')!r}, not {FORMAT!r}"
    if m.get("version") not in VERSIONS:
        return f"has version {m.get('version')!r}; this aekit reads versions {', '.join(map(str, VERSIONS))}"
    if set(m) != _KEYS:
        missing, extra = sorted(_KEYS - set(m)), sorted(set(m) - _KEYS)
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


def _check_files(store: Path, manifest: dict) -> None:
    """Each file's size, examples.npy's header and sampled digest, and the other files' digests but listing.json's
    (one line a source file, so as large as the source is many: checked where it is read, see :func:`_listing`)."""
    for name, entry in sorted(manifest["files"].items()):
        path = store / name
        if not path.is_file():
            raise _refuse(store, f"{name} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise _refuse(
                store,
                f"{name} is {size} bytes, not the {entry['size']} it was packed with: it was "
                f"{'truncated' if size < entry['size'] else 'extended'} or replaced",
            )
    path = store / EXAMPLES
    size = path.stat().st_size
    try:
        with path.open("rb") as file:
            header = read_npy_header(file, size)
    except ValueError as error:
        raise _refuse(store, f"{EXAMPLES} is damaged ({error})") from None
    shape = (manifest["n"], *manifest["shape"])
    if header.shape != shape or header.dtype != np.dtype(manifest["dtype"]) or header.fortran:
        raise _refuse(
            store,
            f"{EXAMPLES} holds {header.dtype} {header.shape}{' in Fortran order' * header.fortran} "
            f"but the manifest says {manifest['dtype']} {shape}",
        )
    if header.offset + math.prod(shape) * header.dtype.itemsize != size:
        raise _refuse(store, f"{EXAMPLES} is {size} bytes, not the header and the values of shape {shape}")
    sampled = manifest["files"][EXAMPLES]["sampled"]
    if sampled["offsets"] != sampled_offsets(size, header.offset):
        raise _refuse(
            store,
            f"{MANIFEST} samples {EXAMPLES} at offsets other than a store of its size has (the manifest was edited)",
        )
    if sampled_sha256(path, header.offset, sampled["offsets"]) != sampled["sha256"]:
        raise _refuse(
            store,
            f"{EXAMPLES} does not match its sampled sha256: its values were changed or damaged, "
            "or the manifest belongs to another store",
        )
    for name in sorted(set(manifest["files"]) - {EXAMPLES, LISTING}):
        if file_sha256(store / name) != manifest["files"][name]["sha256"]:
            raise _refuse(
                store,
                f"{name} does not match its sha256: it was changed or replaced, or the manifest "
                "belongs to another store",
            )


def _read(store: Path, name: str) -> dict[str, np.ndarray]:
    """The arrays of a small file of the store, their headers checked before anything is allocated."""
    from aekit.data.arrays import read_numpy

    try:
        return read_numpy(store / name)
    except DataError as error:
        raise _refuse(store, f"{name} cannot be read ({error})") from None


def _npz_shapes(store: Path, name: str) -> dict[str, tuple[int, ...]]:
    """The shape of each array in an .npz file of the store, from the headers alone."""
    try:
        with zipfile.ZipFile(store / name) as archive:
            shapes = {}
            for member in archive.infolist():
                with archive.open(member) as stream:
                    shapes[member.filename.removesuffix(".npy")] = read_npy_header(stream, member.file_size).shape
            return shapes
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
        raise _refuse(store, f"{name} cannot be read ({' '.join(str(error).split())})") from None


def _check_contents(store: Path, manifest: dict) -> None:
    """The manifest's counts and bounds against the (digest-checked) split and statistics: an edited manifest is
    refused."""
    shapes = _npz_shapes(store, SPLIT)
    if shapes != {"train": (manifest["n_train"],), "test": (manifest["n_test"],)}:
        raise _refuse(
            store,
            f"{MANIFEST} gives {manifest['n_train']} training and {manifest['n_test']} test "
            f"examples but {SPLIT} holds {shapes} (the manifest was edited)",
        )
    statistics = _read(store, STATISTICS)
    if set(statistics) != {"mean", "std", "min", "max"} or any(
        a.shape != tuple(manifest["shape"]) for a in statistics.values()
    ):
        raise _refuse(store, f"{STATISTICS} does not hold mean, std, min and max of shape {tuple(manifest['shape'])}")
    bounds = [float(statistics["min"].min()), float(statistics["max"].max())]
    if bounds != manifest["bounds"]:
        raise _refuse(
            store, f"{MANIFEST} gives bounds {manifest['bounds']} but {STATISTICS} {bounds} (the manifest was edited)"
        )


def _check_source(store: Path, manifest: dict) -> None:
    """Refuse a store whose source still lies where it was packed from but has changed since: files added or removed,
    or a file of another size or content. The listing's digest tells in one scandir that nothing did; where it
    differs, a file whose time alone changed (``touch``, ``cp -r``) is read again and compared with listing.json's
    CRC-32 (a version 1 store, which has none, is refused as changed)."""
    source = manifest["source"]
    if source["path"] is None or source["listing_sha256"] is None:
        return
    path = Path(source["path"])
    if not path.exists():
        return  # a copy of the store on another machine, or the source moved: the store stands on its own
    try:
        now = source_entries(source["kind"], path)
    except (OSError, DataError):
        now = None
    if now is not None and listing_sha256(now) == source["listing_sha256"]:
        return
    if now is None or manifest["version"] == 1:
        changes = "files added, removed or modified"
    else:
        changes = _changes(source["kind"], path, now, _listing(store, manifest))
    if changes:
        raise DataError(
            f"store {store}: its source {path} changed since it was packed ({changes}); delete the store and pack it "
            f"again with `aekit pack {path} --out {store}`"
        )


def _changes(kind: str, path: Path, now: list[tuple[str, int, int]], packed: list[list]) -> str:
    """What differs between a source's files ``now`` and as ``packed`` (listing.json's entries), named ("a.png
    added, b.png modified and 3 more"), or "" where the files hold what they held: a file whose time alone changed
    is read again and compared with its packed CRC-32."""
    then = {name: (size, mtime, digest) for name, size, mtime, digest in packed}
    found = {name: (size, mtime) for name, size, mtime in now}
    changes = []
    for name in sorted(then.keys() | found.keys(), key=lambda name: name.split("/")):
        if name not in then or name not in found:
            changes.append(f"{name} {'added' if name in found else 'removed'}")
            continue
        (size, mtime), (old_size, old_mtime, digest) = found[name], then[name]
        if size != old_size or (
            mtime != old_mtime and (digest is None or content_crc32(source_files(kind, path, [name])[0]) != digest)
        ):
            changes.append(f"{name} modified")
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return ", ".join(changes[:3]) + more


def _listing(store: Path, manifest: dict) -> list[list]:
    """listing.json's entries, its sha256 and form checked."""
    path = store / LISTING
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _refuse(store, f"{LISTING} cannot be read ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != manifest["files"][LISTING]["sha256"]:
        raise _refuse(store, f"{LISTING} does not match its sha256: it was changed or replaced")
    try:
        listing = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        listing = None
    if type(listing) is not list or not all(
        type(entry) is list
        and len(entry) == 4
        and type(entry[0]) is str
        and _is_int(entry[1])
        and type(entry[2]) is int
        and (entry[3] is None or _is_hex(entry[3], 8))
        for entry in listing
    ):
        raise _refuse(store, f"{LISTING} is not a list of [name, size, mtime_ns, CRC-32] entries")
    return listing
