"""The store's reader: a store (:mod:`aekit.data.store.format`) opened as a :class:`Dataset` of memory-mapped slices.

A folder is a store when its manifest.json says ``"format": "aekit-store"`` (:func:`is_store`): a folder of images
holding a manifest.json of its own (a web export, a downloaded data set) is not one. Opening (:func:`open_store`)
checks, without reading the whole array: every manifest field's type, each file's size, examples.npy's header against
the manifest's shape and dtype, its sampled sha256, the other files' full sha256 (listing.json's where it is read),
the manifest's counts and bounds against split.npz and statistics.npz, and the id. A store whose source still exists
but has changed (files added or removed, a file of another size or content) is refused too; a file whose time alone
changed (``touch``, ``cp -r`` of a backup) is read again and compared with listing.json, and a copy whose source is
gone opens. Any failure is one :class:`DataError` line naming the store and the fix. :func:`verify_store` also reads
examples.npy and listing.json whole to check their full sha256 (``aekit pack --verify STORE``).

A store of images opens with ``patch`` as photos for patch training, as :mod:`aekit.data.photos` loads the folder it
was packed from: the training photos whole, in the order of that folder's seeded split, each a view of the memory map
(nothing read but the pages a crop touches), and each photo's centre crop as the examples, the only pixels read on
opening and held in memory (n x channels x patch x patch values). A ragged store (version 3) opens only so: without
``patch`` it is refused in one line naming the fixes.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from aekit.data.arrays import npy_file_header, read_npy_header
from aekit.data.dataset import Dataset, split_indices
from aekit.data.store.format import (
    EXAMPLES,
    FORMAT,
    LABELS,
    LISTING,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    RAGGED,
    SIZES,
    SPLIT,
    STATISTICS,
    _is_hex,
    _is_int,
    _no_constant,
    _refuse,
    content_crc32,
    data_digest,
    example_offsets,
    file_sha256,
    labels_mark_anomalies,
    listing_sha256,
    manifest_problem,
    sampled_offsets,
    sampled_sha256,
    source_entries,
    source_files,
    store_id,
)
from aekit.errors import DataError
from aekit.naming import option as named


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


def open_store(path: str | Path, patch: int | None = None) -> Dataset:
    """The store in ``path`` as a :class:`Dataset`: memory-mapped slices of examples.npy (nothing copied), its
    labels, ``bounds``, ``store_id`` and ``digest`` (:func:`data_digest`) from the manifest and ``checked`` (its
    values were checked when it was packed), after the checks in this module's docstring; with ``patch``, its images
    as photos for patch training (:func:`_photos`)."""
    store = Path(path)
    manifest = _checked(store)
    if patch is not None:
        return _photos(store, manifest, patch)
    if manifest["version"] == RAGGED:
        raise DataError(
            f"store {store} holds images of mixed sizes, each at its own, which only patch training reads; train "
            f"on it with {named('patch', 'P')}, or resize the images to one size and pack them again"
        )
    examples = np.load(store / EXAMPLES, mmap_mode="r")
    n_train = manifest["n_train"]
    labels = _labels(store, manifest)
    return Dataset(
        manifest["name"],
        examples[:n_train],
        examples[n_train:],
        None if labels is None else labels[:n_train],
        None if labels is None else labels[n_train:],
        binary=manifest["binary"],
        label_names=None if manifest["label_names"] is None else tuple(manifest["label_names"]),
        bounds=tuple(manifest["bounds"]),
        checked=True,
        store_id=manifest["id"],
        digest=data_digest(manifest),
        anomaly_labels=labels_mark_anomalies(manifest),
    )


def _checked(store: Path) -> dict:
    """The manifest of ``store``, after the checks in this module's docstring."""
    manifest = read_manifest(store)
    _check_files(store, manifest)
    _check_contents(store, manifest)
    # After the files and contents, whose checks name what differs: an edit they cannot see changes the id.
    if manifest["id"] != store_id(manifest):
        what = "its files' digests" if manifest["version"] == 1 else "its other fields"
        raise _refuse(store, f"{MANIFEST} has id {manifest['id']}, not the digest of {what} (the manifest was edited)")
    _check_source(store, manifest)
    return manifest


def _labels(store: Path, manifest: dict) -> np.ndarray | None:
    """labels.npy's labels, in the store's order, or None where the store has none."""
    if not manifest["labels"]:
        return None
    labels = _read(store, LABELS)["x"]
    if labels.shape != (manifest["n"],) or labels.dtype != np.int64:
        raise _refuse(store, f"{LABELS} holds {labels.dtype} {labels.shape}, not int64 ({manifest['n']},)")
    return labels


def _photos(store: Path, manifest: dict, patch: int) -> Dataset:
    """The store's images as :func:`aekit.data.photos.load_photo_folder` loads the folder it was packed from, for
    patch training: the training photos whole (views of the memory map), in the order of that folder's seeded split
    (the store's rows are in increasing source order), each photo's centre ``patch`` x ``patch`` crop as the
    examples. Refused in one line where the store holds no images or one smaller than the patch."""
    from aekit.data.photos import centre

    n, n_train, shape = manifest["n"], manifest["n_train"], manifest["shape"]
    examples = np.load(store / EXAMPLES, mmap_mode="r")
    if manifest["version"] == RAGGED:
        sizes = _sizes(store, manifest)
        starts = example_offsets(sizes, shape[0]).tolist()

        def photo(row: int) -> np.ndarray:
            return examples[starts[row] : starts[row + 1]].reshape(shape[0], *sizes[row])

    elif len(shape) == 3:
        sizes, photo = np.tile(shape[1:], (n, 1)), examples.__getitem__
    else:
        raise DataError(
            f"{named('patch', patch)} crops photos, and the store {store} holds examples of shape {tuple(shape)}, "
            f"not images; pack a folder of images, or drop {named('patch')}"
        )
    split = _read(store, SPLIT)
    small = np.flatnonzero(sizes.min(1) < patch)
    if small.size:
        height, width = sizes[small[0]]
        raise DataError(
            f"store {store}: {_source_name(store, manifest, split, int(small[0]))} is {width}x{height} pixels, "
            f"smaller than the patches of {named('patch', patch)}; use a smaller {named('patch')}, or pack the "
            "folder again without it"
        )
    train, test = np.arange(n_train), np.arange(n_train, n)
    if manifest["split"] == "seeded":  # the folder's order: split_indices's, where the store sorts each split
        seeded = split_indices(n, seed=manifest["seed"], test_fraction=manifest["test_fraction"])
        train, test = np.searchsorted(split["train"], seeded[0]), n_train + np.searchsorted(split["test"], seeded[1])
    photos = tuple(photo(row) for row in train)
    labels = _labels(store, manifest)
    return Dataset(
        manifest["name"],
        np.stack([centre(pixels, patch) for pixels in photos]),
        np.stack([centre(photo(row), patch) for row in test]),
        None if labels is None else labels[train],
        None if labels is None else labels[test],
        binary=manifest["binary"],
        label_names=None if manifest["label_names"] is None else tuple(manifest["label_names"]),
        checked=True,
        store_id=manifest["id"],
        digest=data_digest(manifest),
        photos=photos,
    )


def _source_name(store: Path, manifest: dict, split: dict, row: int) -> str:
    """The source file of the store's ``row`` by listing.json (the images packed are those it lists that were not
    skipped), or "example ROW" where the store lists no files."""
    if LISTING not in manifest["files"]:
        return f"example {row}"
    skipped = set(manifest["skipped"])
    packed = [name for name, *_ in _listing(store, manifest) if name not in skipped]
    index = np.concatenate([split["train"], split["test"]])[row]
    return packed[index]


def _sizes(store: Path, manifest: dict) -> np.ndarray:
    """A ragged store's sizes.npy: each example's (height, width), its sha256 and form checked."""
    if file_sha256(store / SIZES) != manifest["files"][SIZES]["sha256"]:
        raise _refuse(store, f"{SIZES} does not match its sha256: it was changed or replaced")
    sizes = _read(store, SIZES)["x"]
    if sizes.shape != (manifest["n"], 2) or sizes.dtype != np.int64 or not (sizes >= 1).all():
        raise _refuse(store, f"{SIZES} holds {sizes.dtype} {sizes.shape}, not int64 ({manifest['n']}, 2) sizes")
    return sizes


def verify_store(path: str | Path) -> dict:
    """:func:`open_store`'s checks, listing.json's and the full sha256 of examples.npy (which reads it whole);
    returns the manifest."""
    store = Path(path)
    manifest = _checked(store)
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
    problem = manifest_problem(manifest)
    if problem:
        raise _refuse(store, f"{MANIFEST} {problem}")
    return manifest


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
        header = npy_file_header(path)
    except ValueError as error:
        raise _refuse(store, f"{EXAMPLES} is damaged ({error})") from None
    if manifest["version"] == RAGGED:
        shape = (int(example_offsets(_sizes(store, manifest), manifest["shape"][0])[-1]),)
    else:
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
