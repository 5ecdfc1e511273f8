"""Uses of a trained model's codes: denoising, super-resolution and compression, on numpy arrays and on files.

Each use takes examples shaped as the model expects (see :func:`aekit.data.layout.to_shape`), in the data's own
units (a run that standardizes does so inside its model), goes through the model in batches without gradients, and
returns numpy arrays; :func:`aekit.evaluation.measures.psnr` measures them against clean images. The jobs on files
(``*_files``, the commands) read their input in the one scale of :mod:`aekit.data.layout` and write outputs back in
the input's layout and type, a chunk of examples at a time (:data:`CHUNK_BYTES`): a memory-mapped ``.npy`` file or
store goes through in bounded memory whatever its size, never copied whole as floats. A fully convolutional
rate-distortion model (``--net fully-conv``) also compresses images of any size, each whole
(:func:`compress_images`, :func:`decompress_images`; a folder of images or one image file on the command line).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from aekit import codec
from aekit.atomic import atomic_write, check_output
from aekit.data.files import (
    Examples,
    check_intensities,
    check_writable,
    is_idx,
    png_names,
    read_examples,
    writing_examples,
)
from aekit.data.images import IMAGE_SUFFIXES, decoded, image_files
from aekit.data.layout import as_float, describe, to_shape
from aekit.data.store import is_store
from aekit.errors import AekitError, DataError
from aekit.models import ModelConfig
from aekit.models.base import device_of
from aekit.models.inference import in_batches
from aekit.models.rate_distortion import SEARCH_RATE_SLACK
from aekit.models.resample import upsample
from aekit.training import run_folder
from aekit.training.trainer import resolve_device

# Examples the model takes at a time.
BATCH_ROWS = 1024


def _batched(model: torch.nn.Module, method: str, x: np.ndarray, **options) -> np.ndarray:
    """``model.method`` of every example (given its ``options``), in evaluation mode; no examples is a DataError."""
    _some(x)
    model.eval()
    return in_batches(model, method, x, BATCH_ROWS, **options)


def _some(x: np.ndarray) -> None:
    if len(x) == 0:
        raise DataError("there are no examples to process; give at least one")


def _reconstructing(model: torch.nn.Module, what: str) -> None:
    if model.upscale_factor:
        raise AekitError(
            f"this run was trained to upscale, so it cannot {what}; use a run trained with "
            "--task reconstruct (the default)"
        )


def denoise(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of each (noisy) example: decode(encode(x)), clean if the model is a denoising
    auto-encoder trained on that kind of noise."""
    _reconstructing(model, "denoise")
    return _batched(model, "reconstruct", x)


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
    return _batched(model, "reconstruct", upsample(low, factor, "nearest"))


def compress(
    model: torch.nn.Module,
    x: np.ndarray,
    bits: int | None = None,
    search: bool = False,
    search_rate_slack: float = SEARCH_RATE_SLACK,
) -> bytes:
    """The compressed file (:mod:`aekit.codec`) of the examples' codes, stored as the model's ``code_storage`` says
    (:data:`STORAGES`): a rate-distortion model entropy-codes its integer codes (or code maps) under its learned
    prior, about -log2 p(code) bits an example; a model with a codebook (the VQ-VAE) stores its codebook indices
    losslessly, ceil(log2 K) bits each; any other stores its code (the posterior mean for a VAE) quantized to
    ``bits`` bits per dimension. With ``search``, a rate-distortion model's integer codes are searched for rather
    than rounded (``RateDistortionAE.searched_symbols``): a lower loss, each code within (1 + ``search_rate_slack``)
    times the bits of its rounded one (inf: any), decoded alike. The file keeps the layout of ``x`` (flat rows,
    channels last, ...), which :func:`decompress` gives back."""
    _check_bits(model, bits)
    method, options = _coding(model, search, search_rate_slack)
    _reconstructing(model, "compress")
    kept = _batched(model, method, x, **options)
    return _compressed(model, kept, bits, _layout(np.shape(x)[1:], model.example_shape))


class Storage(NamedTuple):
    """How a kind of model's codes go into a compressed file: the model's ``method`` that gives what is kept of an
    example, what a user who gives --bits is told (``lossless``; None: the codes are real, quantized to --bits),
    the function of (model, kept, bits, layout) that makes the file's bytes, and the method that searches for what
    is kept (--search), or why none does."""

    method: str
    lossless: Callable[[torch.nn.Module], str] | None
    write: Callable[[torch.nn.Module, np.ndarray, int | None, int], bytes]
    searched: str | None = None
    no_search: str = "only a rate-distortion run (--model rd-ae) has integer codes and a rate to search among"


def _says_entropy_coded(model: torch.nn.Module) -> str:
    return "entropy-codes its integer codes under its learned prior, each value at the bits its probability asks"


STORAGES = {
    "quantized": Storage(
        "encode",
        None,
        lambda model, codes, bits, layout: codec.encode(
            codec.quantize(codes, bits), run_folder.fingerprint(model), layout
        ),
    ),
    "indices": Storage(
        "code_indices",
        lambda model: (
            f"stores the indices of its codebook of {model.codebook_size} losslessly, at "
            f"{codec.index_bits(model.codebook_size)} bits each"
        ),
        lambda model, indices, _, layout: codec.encode_indices(
            indices, model.codebook_size, run_folder.fingerprint(model), layout
        ),
    ),
    "entropy": Storage(
        "code_symbols",
        _says_entropy_coded,
        lambda model, codes, _, layout: codec.encode_entropy(
            codes, model.probability_tables(), run_folder.fingerprint(model), layout
        ),
        searched="searched_symbols",
    ),
    "maps": Storage(
        "code_symbols",
        _says_entropy_coded,
        lambda model, maps, _, layout: _maps_file(
            model, list(maps), [model.example_shape[1:]] * len(maps), layout=layout
        ),
        no_search="a fully convolutional run's code maps have too many values to try one at a time",
    ),
}


def _storage(model: torch.nn.Module) -> Storage:
    return STORAGES[model.code_storage]


def _coding(model: torch.nn.Module, search: bool, rate_slack: float) -> tuple[str, dict]:
    """The model's method that gives what is kept of each example, and its options: searched for with ``search``,
    where it can be, each code within (1 + ``rate_slack``) times its rounded code's bits."""
    storage = _storage(model)
    if not search:
        return storage.method, {}
    if storage.searched is None:
        raise AekitError(f"--search cannot be used with this run: {storage.no_search}; drop --search")
    return storage.searched, {"rate_slack": rate_slack}


def _check_bits(model: torch.nn.Module, bits: int | None) -> None:
    lossless = _storage(model).lossless
    if lossless is None:
        if bits is None:
            raise AekitError("the run's codes are real numbers: give --bits B, the bits each code value is kept at")
        codec.check_bits(bits)
    elif bits is not None:
        raise AekitError(f"the run {lossless(model)}; drop --bits")


def _compressed(model: torch.nn.Module, kept: np.ndarray, bits: int | None, layout: int) -> bytes:
    return _storage(model).write(model, kept, bits, layout)


def _laid_out(shape: tuple[int, ...], layout: int) -> tuple[int, ...] | None:
    """The shape of an example of ``shape`` (a model's) in ``layout`` (:data:`aekit.codec.LAYOUTS`; the layouts
    :func:`aekit.data.layout.to_shape` reads), or None where it has no such layout."""
    images = len(shape) == 3
    return {
        codec.AS_MODEL: tuple(shape),
        codec.FLAT: (math.prod(shape),),
        codec.NO_CHANNEL: tuple(shape[1:]) if images and shape[0] == 1 else None,
        codec.CHANNELS_LAST: (*shape[1:], shape[0]) if images else None,
    }[layout]


def _layout(given: tuple[int, ...], shape: tuple[int, ...] | None) -> int:
    """The layout (:data:`aekit.codec.LAYOUTS`) of examples of ``given`` shape each, for a model of ``shape``."""
    if shape is None:
        return codec.AS_MODEL
    return next((layout for layout in codec.LAYOUTS if _laid_out(shape, layout) == tuple(given)), codec.AS_MODEL)


def _giving_back(shape: tuple[int, ...], layout: int, source: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function that puts examples (n, *shape) in ``layout``, as a compressed file ``source`` says they were
    given; a DataError where examples of ``shape`` have no such layout (the file is corrupted)."""
    laid_out = _laid_out(shape, layout)
    if laid_out is None:
        raise DataError(
            f"{source} says its examples were laid out {codec.LAYOUTS[layout]}, which examples of {describe(shape)} "
            "cannot be; it is corrupted, compress the examples again"
        )
    return to_shape(np.broadcast_to(np.float32(0), (1, *laid_out)), shape, source)[1]


def takes_any_size(model: torch.nn.Module) -> bool:
    """Whether the model's code is a map, for images of any size (a fully convolutional rate-distortion model)."""
    return model.code_storage == "maps"


def _maps_file(
    model: torch.nn.Module,
    maps: list[np.ndarray],
    sizes: list[tuple[int, int]],
    names: list[str] | None = None,
    layout: int = codec.AS_MODEL,
) -> bytes:
    return codec.encode_maps(maps, sizes, model.probability_tables(), run_folder.fingerprint(model), names, layout)


def compress_images(model: torch.nn.Module, images, names: list[str] | None = None) -> bytes:
    """The compressed file (version 4: :mod:`aekit.codec`) of images of any sizes, each (channels, height, width)
    whole, not cut to the training size: a fully convolutional rate-distortion model codes each image's integer code
    map, its size and the image's in the file's header. With ``names`` (relative paths, e.g. "cats/a.jpg"), version
    5 keeps them, and :func:`compressed_names` gives them back."""
    _map_model(model)
    _some(images)
    if names is not None:
        _check_image_names(names)
    return _maps_of(model, ((f"image {i}", image) for i, image in enumerate(images)), names)


def _check_image_names(names: list[str]) -> None:
    """Refuse, when compressing, names that a file cannot keep or that decompressing could not write as PNGs."""
    codec.check_names(names)
    png_names(names)


def _maps_of(model: torch.nn.Module, sourced_images, names: list[str] | None = None) -> bytes:
    """The version 4 file of (source, image) pairs of any sizes (5 with ``names``), each image mapped and let go in
    turn."""
    maps, sizes = [], []
    for source, image in sourced_images:
        maps.append(_code_map(model, image, source))
        sizes.append(tuple(np.shape(image)[1:]))
    return _maps_file(model, maps, sizes, names)


def compressed_names(data: bytes, source: str = "the compressed file") -> list[str] | None:
    """The names of the images in a compressed file of code maps that keeps them (version 5), in order; None for
    any other file."""
    stored, _ = codec.decode(data, source)
    return stored.names if isinstance(stored, codec.EntropyCoded) else None


def _map_model(model: torch.nn.Module) -> None:
    if not takes_any_size(model):
        raise AekitError(
            "only a fully convolutional rate-distortion run codes images of any size; train one with "
            "`aekit train --model rd-ae --net fully-conv`"
        )


def _code_map(model: torch.nn.Module, image: np.ndarray, source: str) -> np.ndarray:
    """The integer code map (code_dim, h, w) of one image (channels, height, width) of any size."""
    return _code_maps(model, image_batch(model, image, source), source)[0]


def image_batch(model: torch.nn.Module, image: np.ndarray, source: str) -> np.ndarray:
    """One image (channels, height, width) of any size as a batch of it that a fully convolutional model takes:
    float32 (1, channels, height, width), its channels checked."""
    channels = model.example_shape[0]
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != channels or 0 in image.shape:
        raise DataError(
            f"{source} has shape {image.shape}; the run codes images of {channels} channel(s), "
            f"({channels}, height, width)"
        )
    return as_float(image, source)[None]


def _code_maps(model: torch.nn.Module, x: np.ndarray, source: str) -> list[np.ndarray]:
    """The integer code maps of float images of one size (n, channels, height, width), a batch at a time."""
    if model.config.likelihood == "bernoulli":
        check_intensities(x, source)
    model.eval()
    maps = []
    for start in range(0, len(x), BATCH_ROWS):
        block = torch.from_numpy(np.ascontiguousarray(x[start : start + BATCH_ROWS])).to(device_of(model))
        maps += list(model.map_symbols(block).cpu().numpy())
    return maps


def decompress_images(model: torch.nn.Module, data: bytes, source: str = "the compressed file") -> list[np.ndarray]:
    """The images of a compressed file of code maps (version 4), each at its own size: float32 (channels, height,
    width), the model's decoding of its code map (:meth:`RateDistortionAE.decode_map`)."""
    _map_model(model)
    maps, sizes = _restored_maps(model, _opened(model, data, source), source)
    model.eval()
    return [_decoded_map(model, code, size) for code, size in zip(maps, sizes)]


def _decoded_map(model: torch.nn.Module, code: np.ndarray, size) -> np.ndarray:
    y = torch.from_numpy(code)[None].to(device_of(model))
    return model.decode_map(y, int(size[0]), int(size[1]))[0].float().cpu().numpy()


def _restored_maps(model: torch.nn.Module, stored, source: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The code maps of a version 4 file and its sizes (n, 4), each map's size checked against its image's."""
    if not isinstance(stored, codec.EntropyCoded) or stored.sizes is None:
        raise DataError(f"{source} holds no code maps (images of any size); decompress it with aekit.apps.decompress")
    for height, width, h, w in stored.sizes.tolist():
        if model.map_size(height, width) != (h, w):
            raise DataError(
                f"{source} lists a code map of {h}x{w} for an image of {height}x{width}, not the run's "
                f"{'x'.join(map(str, model.map_size(height, width)))}; it is corrupted, compress again"
            )
    return codec.code_maps(_entropy_decoded(model, stored, source), stored.sizes), stored.sizes


def decompress(model: torch.nn.Module, data: bytes, source: str = "the compressed file") -> np.ndarray:
    """The examples a compressed file stands for: the model's decoding of its restored codes, exactly as
    ``model.decode(quantized.restore())`` (``model.decode_indices(indices)`` for a codebook, ``model.decode`` of the
    integer codes for an entropy model), in the layout the examples were compressed in. The file must have been
    made by this model (same weights)."""
    _reconstructing(model, "decompress")
    stored = _opened(model, data, source)
    codes, method = _restored_codes(model, stored, source)
    return _giving_back(model.example_shape, stored.layout, source)(_batched(model, method, codes))


def _opened(model: torch.nn.Module, data: bytes, source: str):
    """What the compressed file ``data`` holds (:func:`aekit.codec.decode`), once it is known to be this model's."""
    stored, fingerprint = codec.decode(data, source)
    ours = run_folder.fingerprint(model)
    if fingerprint != ours:
        raise DataError(
            f"{source} was made by a different run (its model fingerprint {fingerprint.hex()} is not "
            f"this run's {ours.hex()}); decompress it with the run that compressed it"
        )
    return stored


def _restored_codes(model: torch.nn.Module, stored, source: str) -> tuple[np.ndarray, str]:
    """The codes in an opened compressed file, restored as one array of examples of the training size, and the
    model's method that decodes them."""
    if isinstance(stored, codec.EntropyCoded) and stored.sizes is not None:
        maps, sizes = _restored_maps(model, stored, source)
        if (sizes[:, :2] != model.example_shape[1:]).any():
            raise DataError(
                f"{source} holds images of other sizes than the run's {model.example_shape[1]}x"
                f"{model.example_shape[2]}; decompress it into a new folder of PNGs"
            )
        return np.stack(maps).astype(np.float32), "decode"
    if isinstance(stored, codec.EntropyCoded):
        return _entropy_decoded(model, stored, source), "decode"
    if isinstance(stored, codec.Indices):
        if stored.codebook_size != model.codebook_size:
            raise DataError(
                f"{source} holds indices of a codebook of {stored.codebook_size}, not the run's "
                f"{model.codebook_size}; it is corrupted, compress the images again"
            )
        return stored.indices, "decode_indices"
    if stored.q.shape[1] != model.code_dim:
        raise DataError(
            f"{source} holds codes of {stored.q.shape[1]} dimensions but the run's have "
            f"{model.code_dim}; it is corrupted, compress the images again"
        )
    return stored.restore(), "decode"


def _entropy_decoded(model: torch.nn.Module, stored: codec.EntropyCoded, source: str) -> np.ndarray:
    """The integer codes of a version 3 file, as float32 (exact: they were float32 integers when coded)."""
    if model.entropy_model is None:
        raise DataError(
            f"{source} holds entropy-coded codes and the run has no entropy model; it is corrupted, compress the "
            "images again"
        )
    return codec.decode_entropy(stored, model.probability_tables(), source).astype(np.float32)


# Whole jobs: a run folder, an input file or folder, an output path. The input is read and the output written a chunk
# of examples at a time (see aekit.data.files), so memory stays bounded whatever their size; every check is made
# before the output appears, and it appears complete or not at all.

# The most bytes of float32 a chunk holds on its larger side (its input or its output), unless one batch is more.
CHUNK_BYTES = 32 << 20


def _chunk_rows(*shapes: tuple[int, ...]) -> int:
    """Examples per chunk, for examples and outputs of ``shapes``: whole batches, so that the model sees the batches
    it would see in one pass over all the examples, and the outputs are the same bits whatever the chunk size."""
    rows = CHUNK_BYTES // (4 * max(math.prod(shape) for shape in shapes))
    return max(1, rows // BATCH_ROWS) * BATCH_ROWS


def _load(run_dir: str | Path, device: str) -> tuple[torch.nn.Module, ModelConfig]:
    model = run_folder.load(run_dir, resolve_device(device))
    return model, model.config


class _Input(NamedTuple):
    """An input file's examples (none read yet), the function that puts outputs of the model's shape back in their
    layout, and the one that makes a chunk of them the model's examples, checked."""

    examples: Examples
    layout: Callable[[np.ndarray], np.ndarray]
    shaped: Callable[[np.ndarray], np.ndarray]


def _input(config: ModelConfig, source: str | Path, shape: tuple[int, ...], what: str) -> _Input:
    """The examples in ``source`` for a model of examples of ``shape``; refused before any work unless they have
    that size (in some layout)."""
    examples, source = read_examples(source), str(source)
    # A stand-in of the input's shape that holds no memory: only checked, and its layout kept.
    _, layout = to_shape(np.broadcast_to(np.float32(0), examples.x.shape), shape, source, what)

    def shaped(rows: np.ndarray) -> np.ndarray:
        x, _ = to_shape(rows, shape, source, what)
        if config.likelihood == "bernoulli":
            check_intensities(x, source)
        return x

    return _Input(examples, layout, shaped)


def _chunks(given: _Input, out_shape: tuple[int, ...] = ()):
    """The model's examples a chunk at a time; ``out_shape`` is the shape of one output."""
    rows = given.examples.x
    size = _chunk_rows(rows.shape[1:], out_shape)
    for start in range(0, len(rows), size):
        yield given.shaped(rows[start : start + size])


def _map_file(given: _Input, out: str | Path, out_shape: tuple[int, ...], function, overwrite: bool) -> int:
    """Write ``function`` of each chunk of the input (examples of ``out_shape`` each) to ``out``, in the input's
    layout and type; returns how many examples there were."""
    examples = given.examples
    n = len(examples.x)
    with writing_examples(
        out, (n, *out_shape), examples.names, layout=given.layout, dtype=examples.dtype, overwrite=overwrite
    ) as write:
        for x in _chunks(given, out_shape):
            write(function(x))
    return n


def _images_out(config: ModelConfig) -> bool:
    """Whether the run's outputs can be written as 8-bit images (PNG, IDX): intensities, not standardized values."""
    return len(config.shape) == 3 and not config.standardize


def denoise_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the run's denoising of the examples in ``source`` to ``out`` (see :mod:`aekit.data.files` for the
    formats; an existing ``out`` is replaced only with ``overwrite``, the input or run never: see
    :func:`aekit.atomic.check_output`); returns how many examples there were."""
    model, config = _load(run_dir, device)
    _reconstructing(model, "denoise")
    check_writable(out, _images_out(config), overwrite, inputs=(source,), may_hold=(run_dir,))
    given = _input(config, source, config.shape, "the run denoises examples of")
    return _map_file(given, out, config.shape, lambda x: denoise(model, x), overwrite)


def upscale_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the run's full-size versions of the small images in ``source`` to ``out`` (``overwrite``: as
    :func:`denoise_files`); returns their number."""
    model, config = _load(run_dir, device)
    factor = _upscaler(model)
    channels, height, width = config.shape
    check_writable(out, _images_out(config), overwrite, inputs=(source,), may_hold=(run_dir,))
    small = (channels, height // factor, width // factor)
    given = _input(config, source, small, f"the run upscales (to {height}x{width}) images of")
    return _map_file(given, out, config.shape, lambda x: upscale(model, x), overwrite)


def compress_files(
    run_dir: str | Path,
    source: str | Path,
    bits: int | None,
    out: str | Path,
    device: str = "cpu",
    search: bool = False,
    overwrite: bool = False,
    search_rate_slack: float = SEARCH_RATE_SLACK,
) -> int:
    """Write the compressed file of the examples in ``source`` to ``out``, a name ending in .aekc (see
    :func:`compress`, and its ``search`` and ``search_rate_slack``; ``overwrite``: as :func:`denoise_files`);
    returns its size in bytes. The codes (n x code size) are held whole; the examples are read a chunk at a time."""
    if bits is not None:
        codec.check_bits(bits)
    out = Path(out)
    if out.suffix.lower() != codec.COMPRESSED_SUFFIX:
        raise DataError(
            f"{out}: a compressed file's name ends in {codec.COMPRESSED_SUFFIX}, so that it passes for nothing else; "
            f"name it e.g. {out.stem or 'codes'}{codec.COMPRESSED_SUFFIX}"
        )
    if not out.parent.is_dir():
        raise DataError(f"the folder {out.parent} of {out} does not exist; create it first")
    check_output(out, overwrite, inputs=(source,), may_hold=(run_dir,))
    model, config = _load(run_dir, device)
    _check_bits(model, bits)
    method, options = _coding(model, search, search_rate_slack)
    _reconstructing(model, "compress")
    photos = image_files_in(source) if takes_any_size(model) else None
    if photos is not None:
        channels = model.example_shape[0]
        root = Path(source)
        names = [file.relative_to(root).as_posix() for file in photos] if root.is_dir() else [root.name]
        _check_image_names(names)
        data = _maps_of(model, ((str(file), decoded(file, channels)) for file in photos), names)
    elif takes_any_size(model) and of_another_size((examples := read_examples(source)).x.shape, config.shape):
        data = _compressed_image_array(model, examples.x, str(source))
    else:
        given = _input(config, source, config.shape, "the run compresses examples of")
        kept = np.concatenate([_batched(model, method, x, **options) for x in _chunks(given)])
        data = _compressed(model, kept, bits, _layout(given.examples.x.shape[1:], config.shape))
    atomic_write(out, data)
    return len(data)


def of_another_size(shape: tuple[int, ...], trained: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` holds images that a fully convolutional run codes at their own size: (n,
    channels, h, w) with the run's channels, or (n, h, w) for a run of one channel, of another size than the run's."""
    channels = trained[0]
    images = len(shape) == 4 and shape[1] == channels or len(shape) == 3 and channels == 1
    return images and tuple(shape[-2:]) != tuple(trained[1:])


def _compressed_image_array(model: torch.nn.Module, rows, source: str) -> bytes:
    """The version 4 file of an array of images of one size other than the run's, coded a chunk at a time."""
    height, width = rows.shape[-2:]
    shape = (model.example_shape[0], height, width)
    size = _chunk_rows(shape)
    maps = []
    for start in range(0, len(rows), size):
        x = np.asarray(rows[start : start + size], np.float32).reshape(-1, *shape)
        maps += _code_maps(model, x, source)
    return _maps_file(model, maps, [(height, width)] * len(maps), layout=_layout(rows.shape[1:], shape))


def image_files_in(source: str | Path) -> list[Path] | None:
    """The image files a fully convolutional run codes at their own sizes: those of a folder of images, or one image
    file; None for any other input (arrays and stores: see :func:`of_another_size`)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    return image_files(path) if path.is_dir() and not is_store(path) else None


def decompress_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the examples that the compressed file ``source`` stands for to ``out``, decoded a chunk at a time
    (``overwrite``: as :func:`denoise_files`); returns their number."""
    model, config = _load(run_dir, device)
    _reconstructing(model, "decompress")
    check_writable(out, _images_out(config), overwrite, inputs=(source,), may_hold=(run_dir,))
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise DataError(f"{source} cannot be read ({error.strerror}); check the path") from None
    stored = _opened(model, data, str(source))
    if isinstance(stored, codec.EntropyCoded) and stored.sizes is not None:
        return _write_maps(model, stored, str(source), Path(out), overwrite)
    codes, method = _restored_codes(model, stored, str(source))
    _some(codes)
    size = _chunk_rows(codes.shape[1:], config.shape)
    layout = _giving_back(config.shape, stored.layout, str(source))
    with writing_examples(out, (len(codes), *config.shape), layout=layout, overwrite=overwrite) as write:
        for start in range(0, len(codes), size):
            write(_batched(model, method, codes[start : start + size]))
    return len(codes)


def _write_maps(model: torch.nn.Module, stored: codec.EntropyCoded, source: str, out: Path, overwrite: bool) -> int:
    """Write the images of a file of code maps to ``out``, one at a time at its own size: a new folder of PNGs
    (or, when every image is the run's size, any output :func:`decompress_files` writes)."""
    maps, sizes = _restored_maps(model, stored, source)
    shapes = {tuple(size[:2]) for size in sizes.tolist()}
    if len(shapes) > 1 and (out.suffix.lower() == ".npy" or is_idx(out)):
        raise DataError(f"{source} holds images of {len(shapes)} sizes, which one array cannot; name a new folder")
    height, width = next(iter(shapes))
    model.eval()
    shape = (model.example_shape[0], height, width)
    layout = _giving_back(shape, stored.layout, source)
    with writing_examples(out, (len(maps), *shape), stored.names, layout=layout, overwrite=overwrite) as write:
        for code, size in zip(maps, sizes):
            write(_decoded_map(model, code, size)[None])
    return len(maps)
