"""Examples handed in by a user, as a model takes them: one scale for a type, one layout for a shape.

Type: 8-bit integers (uint8) are intensities and divided by 255, wherever they come from (an .npy file in training,
an input of the apps, an array given to the Python API); booleans are 0/1 intensities; other numbers are taken as
they are. NaN and infinity are refused. Layout: (n, *shape) as the model has it, (n, features) rows of the right
length, (n, height, width) for one-channel images, or channels last (n, height, width, channels); results go back
in the caller's layout (:func:`to_shape` returns how).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from aekit.errors import DataError


def as_float(values: np.ndarray, source: str, dtype=np.float32) -> np.ndarray:
    """``values`` as float32 (or ``dtype``, float64 for a model that computes in it) in the scale models see: uint8 /
    255, booleans as 0/1, other numbers as they are."""
    values, dtype = np.asarray(values), np.dtype(dtype)
    if values.dtype.kind not in "biuf":
        raise DataError(
            f"{source} holds {values.dtype} values, not numbers; give a numeric array (uint8 pixels, or floats)"
        )
    if values.dtype == np.uint8:
        x = values.astype(dtype)
        x /= 255
        return x
    with np.errstate(over="ignore"):
        x = values.astype(dtype)
    if x.size and not np.isfinite(x).all():
        raise DataError(
            f"{source} holds NaN or infinite values (or values beyond {dtype}'s range, about "
            f"{np.finfo(dtype).max:.1e}); clean or impute them first"
        )
    return x


def image_layout(shape: tuple[int, ...]) -> tuple[tuple[int, ...], bool]:
    """How an array's per-example ``shape`` is read: (h, w) as one channel, (c, h, w) with 1 or 3 channels first,
    (h, w, c) with 1 or 3 channels last (then the second value is True); anything else as flat features."""
    if len(shape) == 2:
        return (1, *shape), False
    if len(shape) == 3 and shape[0] in (1, 3):
        return tuple(shape), False
    if len(shape) == 3 and shape[2] in (1, 3):
        return (shape[2], shape[0], shape[1]), True
    return (math.prod(shape),), False


def to_shape(
    x: np.ndarray, shape: tuple[int, ...], source: str, what: str = "the run expects"
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``x`` (a numpy array or a torch tensor) as (n, *shape), and the function that puts an array (or tensor) of
    that shape back into ``x``'s layout.

    Equal shapes pass; (n, height, width) gains the channel of one-channel images; channels-last images are
    transposed; (n, features) rows of the right length are unflattened. Anything else is a DataError naming both
    sizes (and a missing batch dimension where that is what is wrong)."""
    shape, given = tuple(shape), tuple(x.shape[1:])
    if x.ndim == 0:
        raise DataError(f"{source} is a single number; give an array of examples, one per row")
    if given == shape:
        return x, lambda y: y
    if len(shape) == 3 and given == shape[1:] and shape[0] == 1:
        return x[:, None], lambda y: y[:, 0]
    if len(shape) == 3 and given == (shape[1], shape[2], shape[0]):
        # swapaxes: the same on numpy arrays and torch tensors (model inputs of either kind).
        return x.swapaxes(1, 3).swapaxes(2, 3), lambda y: y.swapaxes(1, 3).swapaxes(1, 2)
    if x.ndim == 2 and x.shape[1] == math.prod(shape):
        return x.reshape(len(x), *shape), lambda y: y.reshape(len(y), -1)
    hint = "; add a first dimension for the batch, e.g. x[None]" if tuple(x.shape) in (shape, shape[1:]) else ""
    raise DataError(
        f"{source} holds examples of size {describe(given)} but {what} {describe(shape)}; give "
        f"examples of that size{hint}"
    )


def describe(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]} ({shape[0]} channel{'s' if shape[0] > 1 else ''})"
    if len(shape) == 2:
        return f"{shape[0]}x{shape[1]}"
    return "x".join(map(str, shape)) + (" values" if len(shape) == 1 else "")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] intensities as 8-bit pixels (clipped, rounded); 8-bit pixels as they are."""
    if x.dtype == np.uint8:
        return x
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
