"""Compression with a trained model (``aekit compress``, ``aekit decompress``): the compressed file
(:mod:`aekit.codec`) of examples' codes, stored as the model's ``code_storage`` says (:data:`STORAGES`), and the
examples a file stands for, on numpy arrays and on files.

A fully convolutional rate-distortion model (``--net fully-conv``, or ``--model factorized``) and a scale hyperprior
(``--model hyperprior``: each image's hyper-code and code map, version 6) also compress images of any size, each whole
(:func:`compress_images`, :func:`decompress_images`; a folder of images or one image file on the command line). The
jobs on files (``*_files``) read their input and write their output a chunk of examples at a time
(:mod:`aekit.uses.file_jobs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from aekit import codec
from aekit.atomic import atomic_write
from aekit.data.files import is_idx, png_names, writing_examples
from aekit.data.layout import describe, to_shape
from aekit.errors import AekitError, DataError
from aekit.models.base import device_of
from aekit.models.rate_distortion import SEARCH_RATE_SLACK
from aekit.training import run_folder
from aekit.uses import file_jobs


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
    method, options = _coding(model, bits, search, search_rate_slack)
    kept = file_jobs.batched(model, method, x, **options)
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


def _array_of_maps(model: torch.nn.Module, maps, _, layout: int) -> bytes:
    """The file of an array's code maps (compress of examples of the model's size, not of photos of their own)."""
    return _maps_file(model, list(maps), [model.example_shape[1:]] * len(maps), layout=layout)


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
        _array_of_maps,
        no_search="a fully convolutional run's code maps have too many values to try one at a time",
    ),
    "hyper-maps": Storage(
        "latent_codes",
        _says_entropy_coded,
        _array_of_maps,
        no_search="a hyperprior run's code maps have too many values to try one at a time",
    ),
}


def _storage(model: torch.nn.Module) -> Storage:
    return STORAGES[model.code_storage]


def _coding(model: torch.nn.Module, bits: int | None, search: bool, rate_slack: float) -> tuple[str, dict]:
    """The model's method that gives what is kept of each example, and its options: searched for with ``search``,
    where it can be, each code within (1 + ``rate_slack``) times its rounded code's bits; refused unless the model
    compresses with ``bits`` (and ``search``)."""
    if not model.gives_codes:
        raise AekitError("this run gives no codes to compress (its model restores images); use another run")
    _check_bits(model, bits)
    storage = _storage(model)
    if search and storage.searched is None:
        raise AekitError(f"--search cannot be used with this run: {storage.no_search}; drop --search")
    file_jobs.check_reconstructs(model, "compress")
    return (storage.searched, {"rate_slack": rate_slack}) if search else (storage.method, {})


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


def _maps_file(
    model: torch.nn.Module,
    maps: list[np.ndarray],
    sizes: list[tuple[int, int]],
    names: list[str] | None = None,
    layout: int = codec.AS_MODEL,
) -> bytes:
    fingerprint = run_folder.fingerprint(model)
    if model.code_storage == "hyper-maps":
        codes = [_hyper_codes(model, code) for code in maps]
        tables, scales = model.probability_tables(), model.scale_tables()
        return codec.encode_hyper_maps(codes, sizes, tables, scales, fingerprint, names, layout)
    return codec.encode_maps(maps, sizes, model.probability_tables(), fingerprint, names, layout)


def _hyper_codes(model: torch.nn.Module, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A hyperprior model's hyper-code of a code map before rounding (d, h, w), the integer map, and the scale index
    of each of its values, as the decoder computes them from the hyper-code."""
    y = torch.from_numpy(np.asarray(latent))[None].to(device_of(model))
    z = model.hyper_symbols(y)[0].cpu().numpy()
    return z, torch.round(y)[0].long().cpu().numpy(), model.scale_indices(z, *latent.shape[1:])


def compress_images(model: torch.nn.Module, images, names: list[str] | None = None) -> bytes:
    """The compressed file (version 4: :mod:`aekit.codec`) of images of any sizes, each (channels, height, width)
    whole, not cut to the training size: a fully convolutional rate-distortion model codes each image's integer code
    map, its size and the image's in the file's header (a hyperprior: version 6, its hyper-code too). With
    ``names`` (relative paths, e.g. "cats/a.jpg"), version 5 (6) keeps them, and :func:`compressed_names` gives them
    back."""
    _map_model(model)
    file_jobs.check_some(images)
    if names is not None:
        _check_image_names(names)
    batches = (file_jobs.image_batch(model, image, f"image {i}") for i, image in enumerate(images))
    return _maps_of(model, batches, names)


def _check_image_names(names: list[str]) -> None:
    """Refuse, when compressing, names that a file cannot keep or that decompressing could not write as PNGs."""
    codec.check_names(names)
    png_names(names)


def _maps_of(model: torch.nn.Module, batches, names: list[str] | None = None, layout: int = codec.AS_MODEL) -> bytes:
    """The version 4 file (5 with ``names``) of batches of images (n, channels, height, width), each batch of one
    size, any size, mapped and let go in turn."""
    maps, sizes = [], []
    for x in batches:
        maps += _code_maps(model, x)
        sizes += [tuple(x.shape[-2:])] * len(x)
    return _maps_file(model, maps, sizes, names, layout)


def compressed_names(data: bytes, source: str = "the compressed file") -> list[str] | None:
    """The names of the images in a compressed file of code maps that keeps them (version 5), in order; None for
    any other file."""
    stored, _ = codec.decode(data, source)
    return stored.names if _holds_maps(stored) else None


def _holds_maps(stored) -> bool:
    """Whether an opened compressed file holds code maps of images of any sizes (versions 4 to 6)."""
    return isinstance(stored, codec.HyperCoded) or isinstance(stored, codec.EntropyCoded) and stored.sizes is not None


def _map_model(model: torch.nn.Module) -> None:
    if not file_jobs.takes_any_size(model):
        raise AekitError(
            "only a fully convolutional rate-distortion run codes images of any size; train one with "
            "`aekit train --model rd-ae --net fully-conv`"
        )


def _code_maps(model: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """The code maps of float images of one size (n, channels, height, width), checked, a batch at a time: integer,
    or a hyperprior's before rounding (its hyper-code is computed from them)."""
    model.eval()
    mapped = model.latent_maps if model.code_storage == "hyper-maps" else model.map_symbols
    maps = []
    for start in range(0, len(x), file_jobs.BATCH_ROWS):
        block = torch.from_numpy(np.ascontiguousarray(x[start : start + file_jobs.BATCH_ROWS])).to(device_of(model))
        maps += list(mapped(block).cpu().numpy())
    return maps


def decompress_images(model: torch.nn.Module, data: bytes, source: str = "the compressed file") -> list[np.ndarray]:
    """The images of a compressed file of code maps (version 4), each at its own size: float32 (channels, height,
    width), the model's decoding of its code map (:meth:`RateDistortionAE.decode_map`)."""
    _map_model(model)
    maps, sizes = _restored_maps(model, _opened(model, data, source), source)
    model.eval()
    return [_decoded_map(model, code, size) for code, size in zip(maps, sizes, strict=True)]


def _decoded_map(model: torch.nn.Module, code: np.ndarray, size) -> np.ndarray:
    y = torch.from_numpy(code)[None].to(device_of(model))
    return model.decode_map(y, int(size[0]), int(size[1]))[0].float().cpu().numpy()


def _restored_maps(model: torch.nn.Module, stored, source: str) -> tuple[Iterable[np.ndarray], np.ndarray]:
    """The code maps of a version 4 to 6 file and its sizes (n, 4 or 6: each image's height and width first), each
    map's size checked against its image's (and a hyper-code's against its map's)."""
    if not _holds_maps(stored):
        raise DataError(
            f"{source} holds no code maps (images of any size); decompress it with aekit.uses.compress.decompress"
        )
    hyper = isinstance(stored, codec.HyperCoded)
    if hyper != (model.code_storage == "hyper-maps"):
        kind = "hyperprior code maps" if hyper else "code maps without a hyper-code"
        raise DataError(f"{source} holds {kind}, which this run does not code; it is corrupted, compress again")
    for height, width, h, w, *hyper_size in stored.sizes.tolist():
        if model.map_size(height, width) != (h, w):
            raise DataError(
                f"{source} lists a code map of {h}x{w} for an image of {height}x{width}, not the run's "
                f"{'x'.join(map(str, model.map_size(height, width)))}; it is corrupted, compress again"
            )
        if hyper and model.hyper_map_size(h, w) != tuple(hyper_size):
            raise DataError(
                f"{source} lists a hyper-code of {'x'.join(map(str, hyper_size))} for a code map of {h}x{w}, not the "
                f"run's; it is corrupted, compress again"
            )
    if hyper:
        # One map at a time, as the images are written; its last check (words used up) runs when it is exhausted.
        tables, scales = model.probability_tables(), model.scale_tables()
        return codec.decode_hyper(stored, tables, scales, model.scale_indices, source), stored.sizes
    return codec.code_maps(_entropy_decoded(model, stored, source), stored.sizes), stored.sizes


def decompress(model: torch.nn.Module, data: bytes, source: str = "the compressed file") -> np.ndarray:
    """The examples a compressed file stands for: the model's decoding of its restored codes, exactly as
    ``model.decode(quantized.restore())`` (``model.decode_indices(indices)`` for a codebook, ``model.decode`` of the
    integer codes for an entropy model), in the layout the examples were compressed in. The file must have been
    made by this model (same weights)."""
    file_jobs.check_reconstructs(model, "decompress")
    stored = _opened(model, data, source)
    codes, method = _restored_codes(model, stored, source)
    return _giving_back(model.example_shape, stored.layout, source)(file_jobs.batched(model, method, codes))


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
    if _holds_maps(stored):
        maps, sizes = _restored_maps(model, stored, source)
        if (sizes[:, :2] != model.example_shape[1:]).any():
            raise DataError(
                f"{source} holds images of other sizes than the run's {model.example_shape[1]}x"
                f"{model.example_shape[2]}; decompress it into a new folder of PNGs"
            )
        return np.stack(list(maps)).astype(np.float32), "decode"
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
    :func:`compress`, and its ``search`` and ``search_rate_slack``; ``overwrite``: as
    :func:`aekit.uses.enhance.denoise_files`); returns its size in bytes. The codes (n x code size) are held whole;
    the examples are read a chunk at a time."""
    if bits is not None:
        codec.check_bits(bits)
    out = Path(out)
    if out.suffix.lower() != codec.COMPRESSED_SUFFIX:
        raise DataError(
            f"{out}: a compressed file's name ends in {codec.COMPRESSED_SUFFIX}, so that it passes for nothing else; "
            f"name it e.g. {out.stem or 'codes'}{codec.COMPRESSED_SUFFIX}"
        )
    file_jobs.check_out_file(out, run_dir, source, overwrite)
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    method, options = _coding(model, bits, search, search_rate_slack)
    own = file_jobs.at_own_size(model, source)
    if own is not None:
        if own.names is not None:
            _check_image_names(own.names)
        given = own.given
        layout = codec.AS_MODEL if given is None else _layout(given, (model.example_shape[0], *given[-2:]))
        data = _maps_of(model, own.batches, own.names, layout)
    else:
        given = file_jobs.read_input(config, source, config.shape, "the run compresses examples of")
        kept = np.concatenate([file_jobs.batched(model, method, x, **options) for x in file_jobs.chunks(given)])
        data = _compressed(model, kept, bits, _layout(given.examples.x.shape[1:], config.shape))
    atomic_write(out, data)
    return len(data)


def decompress_files(
    run_dir: str | Path, source: str | Path, out: str | Path, device: str = "cpu", overwrite: bool = False
) -> int:
    """Write the examples that the compressed file ``source`` stands for to ``out``, decoded a chunk at a time
    (``overwrite``: as :func:`aekit.uses.enhance.denoise_files`); returns their number."""
    model = file_jobs.load_run(run_dir, device)
    config = model.config
    file_jobs.check_reconstructs(model, "decompress")
    file_jobs.check_examples_out(out, config, run_dir, source, overwrite)
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise DataError(f"{source} cannot be read ({error.strerror}); check the path") from None
    stored = _opened(model, data, str(source))
    if _holds_maps(stored):
        return _write_maps(model, stored, str(source), Path(out), overwrite)
    codes, method = _restored_codes(model, stored, str(source))
    file_jobs.check_some(codes)
    size = file_jobs.chunk_rows(codes.shape[1:], config.shape)
    layout = _giving_back(config.shape, stored.layout, str(source))
    with writing_examples(out, (len(codes), *config.shape), layout=layout, overwrite=overwrite) as write:
        for start in range(0, len(codes), size):
            write(file_jobs.batched(model, method, codes[start : start + size]))
    return len(codes)


def _write_maps(model: torch.nn.Module, stored, source: str, out: Path, overwrite: bool) -> int:
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
    with writing_examples(out, (len(sizes), *shape), stored.names, layout=layout, overwrite=overwrite) as write:
        for code, size in zip(maps, sizes, strict=True):
            write(_decoded_map(model, code, size)[None])
    return len(sizes)
