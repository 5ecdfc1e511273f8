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


def _upscaler(model: torch.nn.Module, factor: int | None = None) -> int:
    """The factor the model upscales by: ``factor``, which must be one of its own, or its only one."""
    factors = model.factors or ((model.upscale_factor,) if model.upscale_factor else ())
    if not factors:
        raise AekitError(
            "this run was not trained to upscale; train one with `aekit train --task upscale --factor F` or "
            "`aekit train --model red --restore upscale --factors F`"
        )
    if factor is None and len(factors) > 1:
        raise AekitError(f"this run upscales by {', '.join(map(str, factors))}; choose one with --factor")
    if factor is not None and factor not in factors:
        raise AekitError(f"--factor {factor}: this run upscales by {', '.join(map(str, factors))}; give one of those")
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
    run_dir: str | Path,
    source: str | Path,
    out: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    factor: int | None = None,
) -> int:
    """Write the run's versions ``factor`` times larger (default: its only factor) of the small images in ``source``
    to ``out``, each a run's image size divided by it (``overwrite``: as :func:`denoise_files`); returns their
    number."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    factor = _upscaler(model, factor)
    channels, height, width = config.shape
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    small = (channels, height // factor, width // factor)
    big = (channels, small[1] * factor, small[2] * factor)
    given = file_jobs.read_input(config, source, small, f"the run upscales (to {big[1]}x{big[2]}) images of")
    return file_jobs.map_file(given, out, big, lambda x: upscale(model, x, factor), overwrite)
