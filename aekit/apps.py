"""Kept for one release so that ``aekit.apps.denoise`` and the other names of before keep working: the uses now live
in :mod:`aekit.uses`. Denoising and super-resolution are in :mod:`aekit.uses.enhance`, compression in
:mod:`aekit.uses.compress`, and what they share (batches, chunks, images at their own sizes) in
:mod:`aekit.uses.file_jobs`. Import them from there."""

from aekit.uses.compress import (
    STORAGES,
    Storage,
    compress,
    compress_files,
    compress_images,
    compressed_names,
    decompress,
    decompress_files,
    decompress_images,
)
from aekit.uses.enhance import denoise, denoise_files, upscale, upscale_files
from aekit.uses.file_jobs import BATCH_ROWS, CHUNK_BYTES, image_batch, image_files_in, of_another_size, takes_any_size

__all__ = [
    "BATCH_ROWS",
    "CHUNK_BYTES",
    "STORAGES",
    "Storage",
    "compress",
    "compress_files",
    "compress_images",
    "compressed_names",
    "decompress",
    "decompress_files",
    "decompress_images",
    "denoise",
    "denoise_files",
    "image_batch",
    "image_files_in",
    "of_another_size",
    "takes_any_size",
    "upscale",
    "upscale_files",
]
