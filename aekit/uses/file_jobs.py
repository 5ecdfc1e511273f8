"""What the uses share: a run's model applied to examples a batch at a time, and whole jobs on files.

A job on files takes a run folder, an input file or folder and an output path. Every check is made before the output
appears (:func:`check_examples_out`, :func:`check_out_file`), and it appears complete or not at all. The input is
read and the output written a chunk of examples at a time (:data:`CHUNK_BYTES`; see :mod:`aekit.data.files`), so a
memory-mapped ``.npy`` file or store goes through in bounded memory whatever its size, never copied whole as floats.
A fully convolutional rate-distortion run takes images at their own sizes (:func:`at_own_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from aekit.atomic import check_output
from aekit.data.files import (
    Examples,
    check_folder_of,
    check_intensities,
    check_writable,
    read_examples,
    writing_examples,
)
from aekit.data.images import IMAGE_SUFFIXES, decoded, image_files
from aekit.data.layout import as_float, to_shape
from aekit.data.store import is_store
from aekit.errors import AekitError, DataError
from aekit.models import ModelConfig
from aekit.models.inference import in_batches
from aekit.training import run_folder
from aekit.training.trainer import resolve_device

# Examples the model takes at a time.
BATCH_ROWS = 1024
# The most bytes of float32 a chunk holds on its larger side (its input or its output), unless one batch is more.
CHUNK_BYTES = 32 << 20


def batched(model: torch.nn.Module, method: str, x: np.ndarray, **options) -> np.ndarray:
    """``model.method`` of every example (given its ``options``), in evaluation mode; no examples is a DataError."""
    check_some(x)
    model.eval()
    return in_batches(model, method, x, BATCH_ROWS, **options)


def check_some(x: np.ndarray) -> None:
    if len(x) == 0:
        raise DataError("there are no examples to process; give at least one")


def check_reconstructs(model: torch.nn.Module, what: str) -> None:
    """Refuse to ``what`` (denoise, compress, ...) with a run trained to upscale."""
    if model.upscale_factor or model.factors:
        raise AekitError(
            f"this run was trained to upscale, so it cannot {what}; use a run trained with "
            "--task reconstruct (the default; red: --restore denoise)"
        )


def checked(config: ModelConfig, x: np.ndarray, source: str) -> np.ndarray:
    """``x``, refused where the run models [0, 1] intensities (the cross-entropy) and ``x`` holds other values."""
    if config.likelihood == "bernoulli":
        check_intensities(x, source)
    return x


def load_run(run_dir: str | Path, device: str) -> torch.nn.Module:
    """The model of the run in ``run_dir`` on ``device`` (a name :func:`aekit.training.trainer.resolve_device`
    takes)."""
    return run_folder.load(run_dir, resolve_device(device))


def check_out_file(out: Path, run_dir: str | Path, source: str | Path, overwrite: bool, *beside: Path) -> None:
    """Refuse, before any work, an output file ``out`` (and the files ``beside`` it) in a folder that does not exist,
    or that :func:`aekit.atomic.check_output` refuses: an existing one unless ``overwrite``, the input or the run."""
    check_folder_of(out)
    for path in (out, *beside):
        check_output(path, overwrite, inputs=(source,), may_hold=(run_dir,))


def check_examples_out(
    out: str | Path, config: ModelConfig, run_dir: str | Path, source: str | Path, overwrite: bool
) -> None:
    """Refuse, before any work, an output of the run's examples that :func:`aekit.data.files.check_writable`
    refuses; it can be written as 8-bit images (PNG, IDX) where the run's examples are intensities, not
    standardized values."""
    images = len(config.shape) == 3 and not config.standardize
    check_writable(out, images, overwrite, inputs=(source,), may_hold=(run_dir,))


def chunk_rows(*shapes: tuple[int, ...]) -> int:
    """Examples per chunk, for examples and outputs of ``shapes``: whole batches, so that the model sees the batches
    it would see in one pass over all the examples, and the outputs are the same bits whatever the chunk size."""
    rows = CHUNK_BYTES // (4 * max(math.prod(shape) for shape in shapes))
    return max(1, rows // BATCH_ROWS) * BATCH_ROWS


class Input(NamedTuple):
    """An input file's examples (none read yet), the function that puts outputs of the model's shape back in their
    layout, and the one that makes a chunk of them the model's examples, checked."""

    examples: Examples
    layout: Callable[[np.ndarray], np.ndarray]
    shaped: Callable[[np.ndarray], np.ndarray]


def read_input(config: ModelConfig, source: str | Path, shape: tuple[int, ...], what: str) -> Input:
    """The examples in ``source`` for a model of examples of ``shape``; refused before any work unless they have
    that size (in some layout)."""
    examples, source = read_examples(source), str(source)
    # A stand-in of the input's shape that holds no memory: only checked, and its layout kept.
    _, layout = to_shape(np.broadcast_to(np.float32(0), examples.x.shape), shape, source, what)

    def shaped(rows: np.ndarray) -> np.ndarray:
        return checked(config, to_shape(rows, shape, source, what)[0], source)

    return Input(examples, layout, shaped)


def chunks(given: Input, out_shape: tuple[int, ...] = ()) -> Iterator[np.ndarray]:
    """The model's examples a chunk at a time; ``out_shape`` is the shape of one output."""
    rows = given.examples.x
    size = chunk_rows(rows.shape[1:], out_shape)
    for start in range(0, len(rows), size):
        yield given.shaped(rows[start : start + size])


def map_file(given: Input, out: str | Path, out_shape: tuple[int, ...], function, overwrite: bool) -> int:
    """Write ``function`` of each chunk of the input (examples of ``out_shape`` each) to ``out``, in the input's
    layout and type; returns how many examples there were."""
    examples = given.examples
    n = len(examples.x)
    with writing_examples(
        out, (n, *out_shape), examples.names, layout=given.layout, dtype=examples.dtype, overwrite=overwrite
    ) as write:
        for x in chunks(given, out_shape):
            write(function(x))
    return n


# Images at their own sizes, for a fully convolutional rate-distortion run.


def takes_any_size(model: torch.nn.Module) -> bool:
    """Whether the model's code is a map, for images of any size (a fully convolutional rate-distortion model, a
    hyperprior)."""
    return model.code_storage in ("maps", "hyper-maps")


def image_batch(model: torch.nn.Module, image: np.ndarray, source: str) -> np.ndarray:
    """One image (channels, height, width) of any size as a batch of it that a fully convolutional model takes:
    float32 (1, channels, height, width), its channels and values checked."""
    channels = model.example_shape[0]
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != channels or 0 in image.shape:
        raise DataError(
            f"{source} has shape {image.shape}; the run codes images of {channels} channel(s), "
            f"({channels}, height, width)"
        )
    return checked(model.config, as_float(image, source)[None], source)


def of_another_size(shape: tuple[int, ...], trained: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` holds images that a fully convolutional run codes at their own size: (n,
    channels, h, w) with the run's channels, or (n, h, w) for a run of one channel, of another size than the run's."""
    channels = trained[0]
    images = len(shape) == 4 and shape[1] == channels or len(shape) == 3 and channels == 1
    return images and tuple(shape[-2:]) != tuple(trained[1:])


def image_files_in(source: str | Path) -> list[Path] | None:
    """The image files a fully convolutional run codes at their own sizes: those of a folder of images, or one image
    file; None for any other input (arrays and stores: see :func:`of_another_size`)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    return image_files(path) if path.is_dir() and not is_store(path) else None


def image_names(source: str | Path, files: list[Path]) -> list[str]:
    """The names that the image files of ``source`` (:func:`image_files_in`) keep in an output: their paths relative
    to the folder ``source``, or the name of the image file ``source``."""
    root = Path(source)
    return [file.relative_to(root).as_posix() if root.is_dir() else root.name for file in files]


class AtOwnSize(NamedTuple):
    """The images of an input, each taken at its own size: ``batches`` of them, float32 (n, channels, height,
    width) of one size each, checked; the images' ``names`` (a folder's relative paths, an image file's
    name; None for an array) and ``given``, the shape of an example in the input's array (None for image files)."""

    batches: Iterator[np.ndarray]
    names: list[str] | None
    given: tuple[int, ...] | None


def at_own_size(model: torch.nn.Module, source: str | Path) -> AtOwnSize | None:
    """The images of ``source`` that a fully convolutional run takes at their own sizes: a folder of images (of mixed
    sizes), one image file, or an array of images of one size other than the run's, a batch at a time; None for any
    other run or input (taken at the run's size)."""
    if not takes_any_size(model):
        return None
    files = image_files_in(source)
    if files is not None:
        channels = model.example_shape[0]
        names = image_names(source, files)
        batches = (image_batch(model, decoded(file, channels), str(file)) for file in files)
        return AtOwnSize(batches, names, None)
    examples = read_examples(source)
    if not of_another_size(examples.x.shape, model.config.shape):
        return None
    return AtOwnSize(_image_chunks(model, examples.x, str(source)), examples.names, examples.x.shape[1:])


def _image_chunks(model: torch.nn.Module, rows, source: str) -> Iterator[np.ndarray]:
    """Batches (n, channels, h, w) of an array of images of one size, (n, channels, h, w) or (n, h, w), checked, a
    batch (:data:`BATCH_ROWS`) at a time."""
    channels = model.example_shape[0]
    for start in range(0, len(rows), BATCH_ROWS):
        block = np.asarray(rows[start : start + BATCH_ROWS], np.float32)
        yield checked(model.config, block.reshape(len(block), channels, *block.shape[-2:]), source)
