"""Stores: any source packed once into one memory-mapped array and a manifest, the format's reader and writer side by
side.

    format.py     the files, the manifest (versions 1, 2 and 3: images at their own sizes), digests, the id,
                  listing.json, SOURCE_KINDS
    reader.py     is_store, open_store (a Dataset of memory-mapped slices, after the checks; with a patch, a store
                  of images as photos), verify_store
    writer.py     pack (``aekit pack SOURCE --out STORE``): a source's plan written atomically
    plans.py      how each source is packed (its rows, split, labels); the table of sources is aekit.data.sources
    decoding.py   an image folder's plan, its images decoded in parallel
    pool.py       the worker processes that decode them
"""

from aekit.data.store.format import EXAMPLES, SCALES, SOURCE_KINDS, data_digest
from aekit.data.store.reader import is_store, open_store, read_manifest, verify_store

__all__ = [
    "EXAMPLES",
    "SCALES",
    "SOURCE_KINDS",
    "data_digest",
    "is_store",
    "open_store",
    "read_manifest",
    "verify_store",
]
