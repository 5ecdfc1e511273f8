"""Denoising and super-resolution with a trained model, on numpy arrays and on files (``aekit denoise``, ``aekit
upscale``).

Each takes examples shaped as the model expects (see :func:`aekit.data.layout.to_shape`), in the data's own units (a
run that standardizes does so inside its model), goes through the model in batches without gradients, and returns
numpy arrays; :func:`aekit.evaluation.measures.psnr` measures them against clean images. The jobs on files (``*_files``)
read their input and write outputs in the input's layout and type a chunk of examples at a time
(:mod:`aekit.uses.file_jobs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aekit.errors import AekitError
from aekit.models.resample import upsample
from aekit.uses import file_jobs


def denoise(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of each (noisy) example: decode(encode(x)), clean if the model is a denoising
    auto-encoder trained on that kind of noise."""
    file_jobs.check_reconstructs(model, "denoise")
    return file_jobs.batched(model, "reconstruct", x)


def _upscaler(model: torch.nn.Module) -> int:
    factor = model.upscale_factor
    if not factor:
        raise AekitError("this run was not trained to upscale; train one with `aekit train --task upscale --factor F`")
    return factor


def upscale(model: torch.nn.Module, low: np.ndarray) -> np.ndarray:
    """Full-size images from images downsampled by the model's factor.

    The model reconstructs the nearest-neighbour enlargement of ``low``: its encoder's block average maps that
    enlargement back to ``low`` itself, so the output is the model's restoration of the image whose downsampled
    version is ``low``.
    """
    factor = _upscaler(model)
    return file_jobs.batched(model, "reconstruct", upsample(low, factor, "nearest"))


def denoise_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the run's denoising of the examples in ``source`` to ``out`` (see :mod:`aekit.data.files` for the
    formats; an existing ``out`` is replaced only with ``overwrite``, the input or run never: see
    :func:`aekit.atomic.check_output`); returns how many examples there were."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    file_jobs.check_reconstructs(model, "denoise")
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    given = file_jobs.read_input(config, source, config.shape, "the run denoises examples of")
    return file_jobs.map_file(given, out, config.shape, lambda x: denoise(model, x), overwrite)


def upscale_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the run's full-size versions of the small images in ``source`` to ``out`` (``overwrite``: as
    :func:`denoise_files`); returns their number."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    factor = _upscaler(model)
    channels, height, width = config.shape
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    small = (channels, height // factor, width // factor)
    given = file_jobs.read_input(config, source, small, f"the run upscales (to {height}x{width}) images of")
    return file_jobs.map_file(given, out, config.shape, lambda x: upscale(model, x), overwrite)
