"""Uses of a trained model's codes: denoising, super-resolution and compression, on numpy arrays.

Each takes examples shaped as the model expects (see :func:`aekit.data.layout.to_shape`), in the data's own units
(a run that standardizes does so inside its model), goes through the model in batches without gradients, and returns
numpy arrays; :func:`aekit.evaluate.psnr` measures them against clean images. The jobs on files read their input in
the one scale of :mod:`aekit.data.layout` and write outputs back in the input's layout and type.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aekit import codec, runs
from aekit.atomic import atomic_write
from aekit.data.files import Examples, check_intensities, check_writable, read_examples, write_examples
from aekit.data.layout import to_shape
from aekit.errors import AekitError, DataError
from aekit.evaluate import in_batches, upsample
from aekit.models import ModelSpec
from aekit.trainer import resolve_device


def _batched(model: torch.nn.Module, method: str, x: np.ndarray) -> np.ndarray:
    """``model.method`` of every example, in evaluation mode; no examples is a DataError."""
    if len(x) == 0:
        raise DataError("there are no examples to process; give at least one")
    model.eval()
    return in_batches(model, method, x)


def _reconstructing(model: torch.nn.Module, what: str) -> None:
    if getattr(model, "upscale_factor", None):
        raise AekitError(f"this run was trained to upscale, so it cannot {what}; use a run trained with "
                         "--task reconstruct (the default)")


def denoise(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of each (noisy) example: decode(encode(x)), clean if the model is a denoising
    auto-encoder trained on that kind of noise."""
    _reconstructing(model, "denoise")
    return _batched(model, "reconstruct", x)


def _upscaler(model: torch.nn.Module) -> int:
    factor = getattr(model, "upscale_factor", None)
    if not factor:
        raise AekitError("this run was not trained to upscale; train one with `aekit train --task upscale "
                         "--factor F`")
    return factor


def upscale(model: torch.nn.Module, low: np.ndarray) -> np.ndarray:
    """Full-size images from images downsampled by the model's factor.

    The model reconstructs the nearest-neighbour enlargement of ``low``: its encoder's block average maps that
    enlargement back to ``low`` itself, so the output is the model's restoration of the image whose downsampled
    version is ``low``.
    """
    factor = _upscaler(model)
    return _batched(model, "reconstruct", upsample(low, factor, "nearest"))


def compress(model: torch.nn.Module, x: np.ndarray, bits: int) -> bytes:
    """The compressed file (:mod:`aekit.codec`) of the examples' codes (the posterior mean for a VAE), quantized
    to ``bits`` bits per dimension."""
    codec.check_bits(bits)
    _reconstructing(model, "compress")
    return codec.encode(codec.quantize(_batched(model, "encode", x), bits), runs.fingerprint(model))


def decompress(model: torch.nn.Module, data: bytes, source: str = "the compressed file") -> np.ndarray:
    """The examples a compressed file stands for: the model's decoding of its restored codes, exactly as
    ``model.decode(quantized.restore())``. The file must have been made by this model (same weights)."""
    _reconstructing(model, "decompress")
    quantized, fingerprint = codec.decode(data, source)
    ours = runs.fingerprint(model)
    if fingerprint != ours:
        raise DataError(f"{source} was made by a different run (its model fingerprint {fingerprint.hex()} is not "
                        f"this run's {ours.hex()}); decompress it with the run that compressed it")
    if quantized.q.shape[1] != model.code_dim:
        raise DataError(f"{source} holds codes of {quantized.q.shape[1]} dimensions but the run's have "
                        f"{model.code_dim}; it is corrupted, compress the images again")
    return _batched(model, "decode", quantized.restore())


# Whole jobs: a run folder, an input file or folder, an output path. Every input is checked before the output is
# written, and the output appears complete or not at all.

def _load(run_dir: str | Path, device: str) -> tuple[torch.nn.Module, ModelSpec]:
    run_dir = Path(run_dir)
    spec = runs.model_spec(runs.read_config(run_dir), run_dir)
    return runs.load(run_dir, resolve_device(device)), spec


def _input(spec: ModelSpec, source: str | Path, shape: tuple[int, ...], what: str):
    """The examples in ``source`` as the model takes them (shape ``shape``), the examples as read, and the function
    that puts outputs back in their layout."""
    examples = read_examples(source)
    x, layout = to_shape(examples.x, shape, str(source), what)
    if spec.likelihood == "bernoulli":
        check_intensities(x, str(source))
    return x, examples, layout


def _images_out(spec: ModelSpec) -> bool:
    """Whether the run's outputs can be written as 8-bit images (PNG, IDX): intensities, not standardized values."""
    return len(spec.shape) == 3 and not spec.standardize


def _write(out: str | Path, y: np.ndarray, examples: Examples, layout) -> None:
    write_examples(out, y, examples.names, layout=layout, dtype=examples.dtype)


def denoise_files(run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu") -> int:
    """Write the run's denoising of the examples in ``source`` to ``out`` (see :mod:`aekit.data.files` for the
    formats); returns how many examples there were."""
    model, spec = _load(run_dir, device)
    _reconstructing(model, "denoise")
    check_writable(out, image=_images_out(spec))
    x, examples, layout = _input(spec, source, spec.shape, "the run denoises examples of")
    _write(out, denoise(model, x), examples, layout)
    return len(x)


def upscale_files(run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu") -> int:
    """Write the run's full-size versions of the small images in ``source`` to ``out``; returns their number."""
    model, spec = _load(run_dir, device)
    factor = _upscaler(model)
    channels, height, width = spec.shape
    check_writable(out, image=_images_out(spec))
    low, examples, layout = _input(spec, source, (channels, height // factor, width // factor),
                                   f"the run upscales (to {height}x{width}) images of")
    _write(out, upscale(model, low), examples, layout)
    return len(low)


def compress_files(run_dir: str | Path, source: str | Path, bits: int, out: str | Path, device: str = "cpu") -> int:
    """Write the compressed file of the examples in ``source`` to ``out``; returns its size in bytes."""
    codec.check_bits(bits)
    model, spec = _load(run_dir, device)
    _reconstructing(model, "compress")
    out = Path(out)
    if not out.parent.is_dir():
        raise DataError(f"the folder {out.parent} of {out} does not exist; create it first")
    x, _, _ = _input(spec, source, spec.shape, "the run compresses examples of")
    data = compress(model, x, bits)
    atomic_write(out, data)
    return len(data)


def decompress_files(run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu") -> int:
    """Write the examples that the compressed file ``source`` stands for to ``out``; returns their number."""
    model, spec = _load(run_dir, device)
    _reconstructing(model, "decompress")
    check_writable(out, image=_images_out(spec))
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise DataError(f"{source} cannot be read ({error.strerror}); check the path") from None
    x = decompress(model, data, str(source))
    write_examples(out, x)
    return len(x)
