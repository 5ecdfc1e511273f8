"""A fully convolutional image-to-image function run over a large image in overlapping tiles, so that memory follows
the tile, not the image.

The image is cut into tiles of ``tile`` x ``tile`` pixels; each goes through the function with ``overlap`` pixels
more of the image on each side (fewer at the image's borders, where the function pads as it does for the whole
image), and only the output of the tile itself is kept. Where no output pixel depends on input pixels more than
``overlap`` away, the tiles put together are the function of the whole image, to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from aekit.data.layout import as_float, to_uint8
from aekit.errors import AekitError

# Tile side in pixels where none is asked for (of a model that states its margin).
TILE = 512
# Pixels of the small image on each side that a bicubic upsampling reads (its kernel's reach, 2 on each side).
BICUBIC_REACH = 2


def check_tile(tile: int) -> None:
    if tile < 0:
        raise AekitError(f"a tile of {tile} pixels cannot be; give --tile T > 0, or 0 for each image whole")


def overlap(margin: int, factor: int = 1) -> int:
    """The pixels of the input taken beyond each side of a tile, for a function whose output pixels depend on
    ``margin`` pixels around them at the output's scale: for an upscaling by ``factor`` (the small image upsampled,
    at most bicubically, then restored) ceil(margin / factor) + the bicubic's reach, else ``margin``."""
    return margin if factor == 1 else math.ceil(margin / factor) + BICUBIC_REACH


def tiled(
    function: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    around: int,
    factor: int = 1,
    dtype=np.float32,
    source: str = "the image",
) -> np.ndarray:
    """``function`` (float32 (C, h, w) in the model's scale -> (C', factor h, factor w)) of ``image`` (C, H, W;
    uint8 pixels or floats), a tile of ``tile`` x ``tile`` input pixels (0: the whole image at once) and ``around``
    pixels around it (:func:`overlap`) at a time, each tile's input made float32 only when it is taken. The output
    (C', factor H, factor W) is made once, as float32 or, with ``dtype`` uint8, as 8-bit pixels (each tile rounded
    as :func:`aekit.data.layout.to_uint8` rounds the whole)."""
    check_tile(tile)
    _, height, width = image.shape
    side = tile or max(height, width)
    out = None
    for top in range(0, height, side):
        for left in range(0, width, side):
            bottom, right = min(top + side, height), min(left + side, width)
            above, before = max(0, top - around), max(0, left - around)
            piece = image[:, above : min(height, bottom + around), before : min(width, right + around)]
            result = function(np.ascontiguousarray(as_float(piece, source)))
            if out is None:
                out = np.empty((result.shape[0], height * factor, width * factor), dtype)
            kept = result[
                :,
                (top - above) * factor : (bottom - above) * factor,
                (left - before) * factor : (right - before) * factor,
            ]
            out[:, top * factor : bottom * factor, left * factor : right * factor] = (
                to_uint8(kept) if out.dtype == np.uint8 else kept
            )
    return out
