"""Denoising and super-resolution with a trained model, on numpy arrays and on files (``aekit denoise``, ``aekit
upscale``).

Each takes examples shaped as the model expects (see :func:`aekit.data.layout.to_shape`), in the data's own units (a
run that standardizes does so inside its model), goes through the model in batches without gradients, and returns
numpy arrays; :func:`aekit.evaluation.measures.psnr` measures them against clean images. The jobs on files (``*_files``)
read their input and write outputs in the input's layout and type a chunk of examples at a time
(:mod:`aekit.uses.file_jobs`).

A model that takes images of any size (``takes_any_size``: a fully convolutional one) denoises or upscales whole
photos at their own size instead (:func:`denoise_image`, :func:`upscale_image`; a folder of images or an image file on
the command line), in overlapping tiles where the model states its ``margin`` (:mod:`aekit.uses.tiles`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aekit.data.files import writing_examples
from aekit.data.idx import is_idx
from aekit.data.images import decoded
from aekit.errors import AekitError, DataError
from aekit.models.inference import in_batches
from aekit.models.resample import upsample
from aekit.naming import option as named
from aekit.uses import file_jobs
from aekit.uses.tiles import TILE, overlap, tiled


def denoise(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of each (noisy) example: decode(encode(x)), clean if the model is a denoising
    auto-encoder trained on that kind of noise."""
    file_jobs.check_reconstructs(model, "denoise")
    return file_jobs.batched(model, "reconstruct", x)


def _upscaler(model: torch.nn.Module, factor: int | None = None) -> int:
    """The factor the model upscales by: ``factor``, which must be one of its own, or its only one."""
    factors = model.factors or ((model.upscale_factor,) if model.upscale_factor else ())
    if not factors:
        raise AekitError(
            "this run was not trained to upscale; train one with `aekit train --task upscale --factor F` or "
            "`aekit train --model red --restore upscale --factors F`"
        )
    if factor is None and len(factors) > 1:
        raise AekitError(f"this run upscales by {', '.join(map(str, factors))}; choose one with {named('factor')}")
    if factor is not None and factor not in factors:
        raise AekitError(
            f"{named('factor', factor)}: this run upscales by {', '.join(map(str, factors))}; give one of those"
        )
    return factors[0] if factor is None else factor


def upscale(model: torch.nn.Module, low: np.ndarray, factor: int | None = None) -> np.ndarray:
    """Images ``factor`` times larger (default: the model's only factor) from images downsampled by it.

    A restoration model (``model.factors``) restores their bicubic enlargement (``enlarge``). An upscaler of the net
    families reconstructs their nearest-neighbour enlargement: its encoder's block average maps that enlargement back
    to ``low`` itself, so the output is the model's restoration of the image whose downsampled version is ``low``.
    """
    factor = _upscaler(model, factor)
    if model.factors:
        return file_jobs.batched(model, "enlarge", np.asarray(low, np.float32), factor=factor)
    return file_jobs.batched(model, "reconstruct", upsample(low, factor, "nearest"))


def denoise_image(model: torch.nn.Module, image: np.ndarray, tile: int | None = None, dtype=np.float32) -> np.ndarray:
    """The restoration (``model.restore``) of one image of any size, (H, W) or (C, H, W), uint8 pixels or [0, 1]
    floats, by a model that takes any size: float32 of the same shape (or 8-bit pixels with ``dtype`` uint8), in
    tiles of ``tile`` pixels (:func:`tiling`)."""
    _check_denoises(model)
    pixels, back = _one_image(model, image, "the image")
    return back(_denoised(model, pixels, tile, "the image", dtype))


def upscale_image(
    model: torch.nn.Module, image: np.ndarray, factor: int | None = None, tile: int | None = None, dtype=np.float32
) -> np.ndarray:
    """The enlargement (``model.enlarge(low, factor)``) of one small image of any size, (H, W) or (C, H, W), uint8
    pixels or [0, 1] floats, by an upscaling model that takes any size: float32 ``factor`` times its size (or 8-bit
    pixels with ``dtype`` uint8; ``factor``: one of the model's ``factors``, by default its only one), in tiles of
    ``tile`` small pixels (:func:`tiling`)."""
    factor = upscaling_factor(model, factor)
    pixels, back = _one_image(model, image, "the image")
    return back(_upscaled(model, pixels, factor, tile, "the image", dtype))


def tiling(model: torch.nn.Module, tile: int | None, factor: int = 1) -> tuple[int, int]:
    """The tile side and the overlap of each tile (:func:`aekit.uses.tiles.overlap`) for a model of any size: its
    ``margin`` (pixels an output pixel depends on beyond itself) and ``tile`` (None: :data:`aekit.uses.tiles.TILE`; 0:
    whole images), each a multiple of its ``stride``. A model that states no margin takes whole images only."""
    margin = getattr(model, "margin", None)
    if margin is None:
        if tile:
            raise AekitError(
                "this run's model states no margin (how far its output pixels see), so its images cannot be cut "
                "into tiles; give --tile 0 to take each image whole"
            )
        return 0, 0
    # A model that samples its input on a grid of ``stride`` pixels (stride-2 levels) gives a tile the output it
    # gives the whole image only where the tile starts on that grid: side and overlap are rounded up to it.
    stride = getattr(model, "stride", 1)
    return _on_grid(TILE if tile is None else tile, stride), _on_grid(overlap(margin, factor), stride)


def _on_grid(pixels: int, stride: int) -> int:
    return -(-pixels // stride) * stride


def _check_any_size(model: torch.nn.Module, what: str) -> None:
    if not model.takes_any_size:
        raise AekitError(
            f"this run takes images of its training size only, so it cannot {what} images of any size; train a "
            "fully convolutional one (the restoration family red, or rd-ae --net fully-conv)"
        )


def _check_denoises(model: torch.nn.Module) -> None:
    _check_any_size(model, "denoise")
    file_jobs.check_reconstructs(model, "denoise")


def upscaling_factor(model: torch.nn.Module, factor: int | None) -> int:
    """``factor``, checked against the factors an upscaling model of any size was trained for (None: its only one)."""
    _check_any_size(model, "upscale")
    return _upscaler(model, factor)


def _one_image(model: torch.nn.Module, image: np.ndarray, source: str):
    """One image of any size as the model's (C, H, W) (a grey image repeated to a colour model's 3 channels, as the
    image reader repeats it), and the function that gives an output back in the image's layout."""
    image = np.asarray(image)
    channels = model.example_shape[0]
    given = image.shape
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or 0 in image.shape or image.shape[0] not in (1, channels):
        raise DataError(
            f"{source} has shape {given}; the run takes one image of {channels} channel(s), (height, width) or "
            f"({channels}, height, width), of at least one pixel"
        )
    pixels = np.repeat(image, channels, axis=0) if image.shape[0] != channels else image
    return pixels, (lambda y: y[0]) if len(given) == 2 and channels == 1 else (lambda y: y)


def _on_model(model: torch.nn.Module, method: str, **options):
    """``model.method`` of one image (C, h, w) float32, on the model's device in evaluation mode, as numpy."""
    return lambda x: in_batches(model, method, x[None], 1, **options)[0]


def _denoised(model: torch.nn.Module, pixels: np.ndarray, tile: int | None, source: str, dtype=np.float32):
    side, around = tiling(model, tile)
    return tiled(_on_model(model, "restore"), pixels, side, around, dtype=dtype, source=source)


def _upscaled(model: torch.nn.Module, pixels, factor: int, tile: int | None, source: str, dtype=np.float32):
    side, around = tiling(model, tile, factor)
    function = _on_model(model, "enlarge", factor=factor)
    return tiled(function, pixels, side, around, factor, dtype=dtype, source=source)


def _write_photos(model: torch.nn.Module, source, files: list[Path], out, overwrite: bool, enhanced) -> int:
    """Write ``enhanced(pixels, source)`` (8-bit (C, H', W')) of each image file to a new folder of PNGs ``out``,
    one image at a time, named as the images are (relative to the folder ``source``; photo.jpg as photo.png); a
    colour image is refused by a grey model. Nothing is written unless every image is."""
    channels = model.example_shape[0]
    if Path(out).suffix.lower() == ".npy" or is_idx(Path(out)):
        raise DataError(f"images at their own sizes are written as a folder of PNGs, not {out}; name a new folder")
    file_jobs.check_some(files)
    # A folder of PNGs takes each image at its own size: only the number of images and their channels count here.
    with writing_examples(
        out, (len(files), channels, 1, 1), file_jobs.image_names(source, files), overwrite=overwrite
    ) as write:
        for file in files:
            pixels = decoded(file, channels)
            if pixels.shape[0] != channels:
                raise DataError(f"{file} is a colour image; the run takes grey images, convert it to grey first")
            write(enhanced(pixels, str(file))[None])
    return len(files)


def _photos(model: torch.nn.Module, source: str | Path) -> list[Path] | None:
    """The image files a model of any size enhances each at its own size (a folder of images, an image file); None
    for any other run or input."""
    return file_jobs.image_files_in(source) if model.takes_any_size else None


def denoise_files(
    run_dir: str | Path,
    source: str | Path,
    out: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    tile: int | None = None,
) -> int:
    """Write the run's denoising of the examples in ``source`` to ``out`` (see :mod:`aekit.data.files` for the
    formats; an existing ``out`` is replaced only with ``overwrite``, the input or run never: see
    :func:`aekit.atomic.check_output`); returns how many examples there were. A run that takes any size denoises a
    folder of images, or an image file, each at its own size in tiles of ``tile`` (:func:`denoise_image`), to a new
    folder of PNGs."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    file_jobs.check_reconstructs(model, "denoise")
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    files = _photos(model, source)
    if files is not None:  # a model of any size (_photos), already checked to reconstruct
        tiling(model, tile)

        def enhanced(pixels, name):
            return _denoised(model, pixels, tile, name, np.uint8)

        return _write_photos(model, source, files, out, overwrite, enhanced)
    given = file_jobs.read_input(config, source, config.shape, "the run denoises examples of")
    return file_jobs.map_file(given, out, config.shape, lambda x: denoise(model, x), overwrite)


def upscale_files(
    run_dir: str | Path,
    source: str | Path,
    out: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    factor: int | None = None,
    tile: int | None = None,
) -> int:
    """Write the run's full-size versions of the small images in ``source`` to ``out`` (``overwrite``: as
    :func:`denoise_files`); returns their number. A run that takes any size upscales a folder of images, or an image
    file, each by ``factor`` at its own size (:func:`upscale_image`), to a new folder of PNGs."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    files = _photos(model, source)
    if files is not None:
        factor = upscaling_factor(model, factor)
        tiling(model, tile, factor)
        file_jobs.check_examples_out(out, config, run_dir, source, overwrite)

        def enhanced(pixels, name):
            return _upscaled(model, pixels, factor, tile, name, np.uint8)

        return _write_photos(model, source, files, out, overwrite, enhanced)
    factor = _upscaler(model, factor)
    channels, height, width = config.shape
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    small = (channels, height // factor, width // factor)
    big = (channels, small[1] * factor, small[2] * factor)
    given = file_jobs.read_input(config, source, small, f"the run upscales (to {big[1]}x{big[2]}) images of")
    return file_jobs.map_file(given, out, big, lambda x: upscale(model, x, factor), overwrite)
