"""The identity of a dataset: what a run records of the data it was trained on (config.json's ``data``), so that
resuming, evaluating or exporting it on other data is refused, naming what changed.

What identifies the data is a digest of its examples, labels and split: a store's
:func:`aekit.data.store.data_digest` (of its data files' sha256s, so the same store packed again from a source whose
times changed still matches), any other source's :func:`data_sha256` (of the examples as loaded). A store's id comes
with it, to name the store in messages, and so do the counts and the example shape.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np

from aekit.data.dataset import CHUNK_ROWS, Dataset

# Both splits hashed whole up to this many bytes of examples; larger data is sampled (see data_sha256).
WHOLE_BYTES = 64 << 20
# Rows hashed of each split of larger data, spread evenly from its first row to its last.
SAMPLED_ROWS = 1024


def data_identity(dataset: Dataset) -> dict:
    """What a run records of its data: ``store_id`` (a store's id, else null), ``sha256`` (the dataset's ``digest``
    where its source knows one, a store's, else :func:`data_sha256`), ``n_train``, ``n_test`` and ``shape`` (one
    example's)."""
    return {
        "store_id": dataset.store_id,
        "sha256": dataset.digest or data_sha256(dataset),
        "n_train": len(dataset.x_train),
        "n_test": len(dataset.x_test),
        "shape": list(dataset.shape),
    }


def data_sha256(dataset: Dataset) -> str:
    """sha256 of a dataset as loaded: for the training split, then the test split, its shape and type, its labels
    (all of them) and its examples' bytes: every row where the two splits hold at most :data:`WHOLE_BYTES`, else
    :data:`SAMPLED_ROWS` rows of each spread evenly from the first to the last. The rows are in the split's order,
    so another split of the same examples gives another digest. Bounded for data of any size (a memory-mapped
    split is read at those rows alone): a changed count, shape or label is always seen, a changed value in data
    of up to 64 MiB always, in larger data where a sampled row holds it."""
    digest = hashlib.sha256()
    whole = dataset.x_train.nbytes + dataset.x_test.nbytes <= WHOLE_BYTES
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        digest.update(f"{tuple(x.shape)} {np.dtype(x.dtype).str};".encode())
        if y is not None:
            digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        digest.update(b";")
        rows = np.arange(len(x)) if whole else np.unique(np.linspace(0, len(x) - 1, SAMPLED_ROWS).astype(np.int64))
        for start in range(0, len(rows), CHUNK_ROWS):
            digest.update(np.ascontiguousarray(x[rows[start : start + CHUNK_ROWS]]).tobytes())
    return digest.hexdigest()


def identity_problem(recorded) -> str | None:
    """What is wrong with a recorded identity (config.json's ``data``, any JSON value), or None."""
    if not isinstance(recorded, dict) or set(recorded) != {"store_id", "sha256", "n_train", "n_test", "shape"}:
        return "is not an object of store_id, sha256, n_train, n_test and shape"
    if not isinstance(recorded["sha256"], str) or not (
        recorded["store_id"] is None or isinstance(recorded["store_id"], str)
    ):
        return "does not hold the data's sha256 and a store's id or null"
    counts = (recorded["n_train"], recorded["n_test"])
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in counts):
        return f"has counts {counts!r}, not whole numbers >= 1"
    shape = recorded["shape"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 1 for d in shape):
        return f"has shape {shape!r}, not a list of sizes"
    return None


def identity_change(recorded: dict, now: dict) -> str | None:
    """How the data ``now`` differs from the ``recorded`` (both :func:`data_identity`'s), as the end of a sentence
    about the data ("has 101 examples ... where the run was trained on 100 ..."), or None where it is the same."""
    n, n_then = now["n_train"] + now["n_test"], recorded["n_train"] + recorded["n_test"]
    if (now["n_train"], now["n_test"]) != (recorded["n_train"], recorded["n_test"]):
        return (
            f"has {n} examples ({now['n_train']} training, {now['n_test']} test) where the run was trained on "
            f"{n_then} ({recorded['n_train']} training, {recorded['n_test']} test)"
        )
    if now["shape"] != recorded["shape"]:
        return f"has examples of shape {tuple(now['shape'])} where the run was trained on {tuple(recorded['shape'])}"
    if now["sha256"] == recorded["sha256"]:
        return None
    if recorded["store_id"] is None and now["store_id"] is None:
        return "holds other examples, labels or split than the run was trained on (in the same counts)"
    found = f"is the store {now['store_id']}" if now["store_id"] else "is not a store"
    trained = f"the store {recorded['store_id']}" if recorded["store_id"] else "data that is not a store"
    other = ", of other examples, labels or split," if recorded["store_id"] and now["store_id"] else ""
    return f"{found}{other} where the run was trained on {trained}"
