"""Codes as files for the Embedding Projector (TensorBoard's projector plugin, or projector.tensorflow.org's Load).

A folder holds ``tensors.tsv`` (one code per line, tab-separated), ``metadata.tsv`` (a header, then the label and the
index of each example in its split; the index alone, without a header, where there are no labels), ``sprite.png``
(images only: the examples as a square grid of thumbnails, in the same order) and ``projector_config.pbtxt``, which
ties them together for TensorBoard: ``tensorboard --logdir FOLDER``, Projector tab.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from aekit.atomic import atomic_write, make_folder, writing

TENSORS, METADATA, SPRITE, CONFIG = "tensors.tsv", "metadata.tsv", "sprite.png", "projector_config.pbtxt"
MAX_POINTS = 10_000
# The projector refuses sprite images larger than this on either side; thumbnails shrink to fit.
MAX_SPRITE_SIDE = 8192


def write_projector(
    folder: str | Path,
    codes: np.ndarray,
    labels: np.ndarray | None = None,
    images: np.ndarray | None = None,
    *,
    name: str = "codes",
) -> Path:
    """Write the projector files for ``codes`` (n, code_dim) into ``folder``; ``labels`` (n,) go into the metadata
    and ``images`` (n, channels, height, width) in [0, 1] into the sprite. Each file is written atomically, the
    config last, so TensorBoard never reads a config whose files are missing. Returns the folder; a write the file
    system refuses raises :class:`aekit.atomic.StorageError`."""
    folder = Path(folder)
    make_folder(folder)
    atomic_write(folder / TENSORS, _tsv(np.asarray(codes, dtype=np.float32), "%.7g"))
    index = np.arange(len(codes))
    if labels is None:
        # The projector reads a single column as values, not as a header.
        atomic_write(folder / METADATA, _tsv(index[:, None], "%d"))
    else:
        atomic_write(folder / METADATA, b"label\tindex\n" + _tsv(np.stack([labels, index], axis=1), "%d"))
    # The shape is stated so that TensorBoard need not read the whole TSV to learn it (its plugin fills it in
    # asynchronously and can serve the config before it has).
    config = [
        f'  tensor_name: "{name}"',
        f'  tensor_path: "{TENSORS}"',
        f'  metadata_path: "{METADATA}"',
        f"  tensor_shape: {len(codes)}",
        f"  tensor_shape: {np.shape(codes)[1]}",
    ]
    if images is not None:
        width, height = write_sprite(folder / SPRITE, images)
        config.append(
            f'  sprite {{\n    image_path: "{SPRITE}"\n    single_image_dim: {width}\n'
            f"    single_image_dim: {height}\n  }}"
        )
    else:
        with writing(folder / SPRITE):
            (folder / SPRITE).unlink(missing_ok=True)  # a sprite left from other data would not match these points
    atomic_write(folder / CONFIG, ("embeddings {\n" + "\n".join(config) + "\n}\n").encode())
    return folder


def write_sprite(path: Path, images: np.ndarray) -> tuple[int, int]:
    """The images as a square grid of thumbnails in one PNG (gray or RGB), row by row; thumbnails are shrunk
    (area-averaged) where the grid would pass :data:`MAX_SPRITE_SIDE` pixels. Returns a thumbnail's (width, height)."""
    n, channels, height, width = images.shape
    side = math.ceil(math.sqrt(n))
    scale = min(1.0, MAX_SPRITE_SIDE / (side * max(height, width)))
    if scale < 1:
        # Imported here: only a sprite too large to show needs torch, and this module is read without it.
        import torch

        height, width = max(1, int(height * scale)), max(1, int(width * scale))
        images = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(images, np.float32)), size=(height, width), mode="area"
        ).numpy()
    # Imported here: the report's figures need matplotlib, which the command line does not load to build its parser.
    from aekit.report.plots import tile

    # The projector expects a full square: side x side cells, the unused ones black.
    square = np.zeros((side * side, channels, height, width), np.float32)
    square[:n] = images
    pixels = np.round(tile(square, side) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return width, height


def _tsv(rows: np.ndarray, fmt: str) -> bytes:
    text = io.StringIO()
    np.savetxt(text, rows, fmt=fmt, delimiter="\t")
    return text.getvalue().encode()
