"""A scikit-learn estimator for photo restoration: the family ``red`` (:mod:`aekit.models.restoration`) trained on
random patches of images of any sizes, and used on whole images at their own size.

``PhotoRestorer(sigma=25, patch_size=40).fit(photos).transform(noisy)`` builds the model ``aekit train --model red
--sigma 25 --patch 40`` builds, trains it with the same trainer on random crops of ``photos`` (flipped and turned,
fresh noise or a fresh low-resolution input each step: :class:`aekit.training.batches.PatchSource`), and restores
each image whole as ``aekit denoise`` and ``aekit upscale`` do, in overlapping tiles where it is large
(:func:`aekit.uses.enhance.denoise_image`, :func:`aekit.uses.enhance.upscale_image`).

Images are a list of numpy arrays of any sizes, each (height, width) for grey or (height, width, channels) with the
channels last, as scikit-image and Pillow give them, of uint8 pixels (0-255) or floats (in [0, 1] for the clean images
that ``fit`` and ``score`` take); or one array (n, height, width) or (n, height, width, channels) of n images of one
size.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from aekit.data import Dataset
from aekit.data.layout import as_float
from aekit.data.photos import centre
from aekit.errors import AekitError, DataError
from aekit.evaluation.measures import psnr
from aekit.models import ModelConfig, model_config
from aekit.models.config import family
from aekit.naming import option as named
from aekit.sklearn.base import (
    ParameterError,
    TorchEstimator,
    family_parameters,
    fitted,
    in_own_words,
    init_storing,
    parameter_doc,
    training_parameters,
    whole,
)
from aekit.training.settings import IMAGES, train_settings
from aekit.training.trainer import check_model_fits, resolve_device
from aekit.uses.enhance import denoise_image, upscale_image, upscaling_factor

__all__ = ["PhotoRestorer"]

# The seed of the noise that score adds: every model is scored on the same noisy images.
SCORE_SEED = 0


class PhotoRestorer(TransformerMixin, TorchEstimator):
    """Photo restoration with the encoder-decoder ``red``: denoising (``restore='denoise'``) or super-resolution
    (``restore='upscale'``) of images of any size, grey or colour.

    ``fit(images)`` trains on random ``patch_size`` x ``patch_size`` crops of the clean ``images``, corrupted afresh
    every step (Gaussian noise of ``sigma``, or a bicubic downsampling by one of ``factors``), ``patches_per_epoch``
    crops an epoch, ``max_iter`` epochs. ``transform(images)`` gives the restored images (denoised; or enlarged by
    ``factor`` from small ones), each at its own size and in its own layout and type: uint8 pixels for uint8 input,
    else floats of the input's type clipped to [0, 1]. The input to transform may stray outside [0, 1], as images
    with Gaussian noise added do; the clean images of ``fit`` and ``score`` may not. ``score(images)`` is the mean
    PSNR in dB of the restoration of a corrupted copy of each clean image against it (see :meth:`score`).

    Parameters (the training; each as the run option of ``aekit train`` it sets)
    ----------------------------------------------------------------------------
    patch_size : int
        Side in pixels of the square crops trained on (``--patch``); each image must be at least that large.
    patches_per_epoch : int
        Crops an epoch draws (``--patches-per-epoch``).
    max_iter : int
        Training epochs (``--epochs``).
    batch_size : int
        Crops a step.
    learning_rate : float
        Adam's step size (``--lr``).
    schedule : {'constant', 'cosine'}
        The learning rate's schedule over the steps.
    random_state : int, RandomState instance or None
        Seeds the initial weights, the crops and the corruption; an int makes ``fit`` reproducible on a device.
    device : str
        'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained network (float32, in eval mode).
    spec_ : aekit.models.ModelConfig
        Its config, as ``aekit train`` records it (shape: channels and the patch's size).
    n_channels_in_ : int
        The channels of the images fitted on (1 for grey); transform and score take images of as many.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss per epoch (the sum of squared differences per crop).
    """

    _model = "red"
    _data = IMAGES
    _arguments = ("factor",)

    __init__ = init_storing(
        "PhotoRestorer.__init__",
        {**family_parameters(family(_model), ModelConfig), **training_parameters(IMAGES)},
    )

    @in_own_words
    def fit(self, images, y=None):
        """Train on random crops of the clean ``images`` (y is ignored) and return self."""
        listed = _images(images, clean=True)
        channels = _channels(listed[0], 0)
        for i, image in enumerate(listed):
            if _channels(image, i) != channels:
                raise DataError(
                    f"images[{i}] has {_channels(image, i)} channel(s) and images[0] {channels}; give images of one "
                    "channel count"
                )
        options = self._run_options()
        patch = options["patch"]
        try:
            fields = self._model_fields(family(self._model), set(training_parameters(IMAGES)))
            spec = model_config(self._model, (channels, patch, patch), **fields)
            device = resolve_device(self.device)
            check_model_fits(spec, device)
            settings = train_settings(options)
        except AekitError as error:
            raise ParameterError(str(error)) from None
        _check_least(
            listed, patch, f"the crops of {named('patch', patch)}; give larger images or a smaller {named('patch')}"
        )
        photos = _as_photos(listed)
        crops = np.stack([centre(photo, patch) for photo in photos])
        # The crops are what the trainer's source reads the example shape from; no test loss is measured.
        data = Dataset("the images", crops, crops, None, None, binary=True, photos=tuple(photos))
        model, history = fitted(spec, data, settings, device)
        self.model_, self.spec_, self.n_channels_in_ = model, spec, channels
        self.n_iter_, self.loss_curve_ = len(history), [record["train_loss"] for record in history]
        return self

    @in_own_words
    def transform(self, images, factor: int | None = None):
        """The restored images: a list for a list, an array for an array. A denoiser denoises each image; an upscaler
        enlarges each (small) image by ``factor``, one of ``factors`` (by default its only one)."""
        check_is_fitted(self)
        listed = self._checked(images, clean=False)
        model = self.model_
        factor = self._factor(factor)  # None for a denoiser
        _check_least(listed, -(-model.stride // (factor or 1)), self._least_why())
        restored = []
        for image in listed:
            dtype = np.uint8 if image.dtype == np.uint8 else np.float32
            pixels = image if image.ndim == 2 else np.moveaxis(image, -1, 0)
            if factor is None:
                out = denoise_image(model, pixels, dtype=dtype)
            else:
                out = upscale_image(model, pixels, factor, dtype=dtype)
            if out.dtype != np.uint8:
                out = np.clip(out, 0, 1).astype(image.dtype, copy=False)
            restored.append(np.ascontiguousarray(out if image.ndim == 2 else np.moveaxis(out, 0, -1)))
        return np.stack(restored) if isinstance(images, np.ndarray) else restored

    @in_own_words
    def score(self, images, y=None, factor: int | None = None):
        """The mean over the clean ``images`` of the PSNR in dB (10 log10(1 / mean squared error) of [0, 1]
        intensities) of the restoration, clipped to [0, 1], of a corrupted copy of each against the image: higher
        is better. A denoiser restores the image with its noise added (``corrupt``: Gaussian at the top of its
        ``sigma`` range, the level ``aekit evaluate``'s psnr_denoised_db takes, or its masking or salt-and-pepper
        share; one draw seeded alike for every model, unclipped, as training adds it); an upscaler enlarges the
        image's bicubic downsampling by ``factor`` (by default, the mean over each of its ``factors``), against the
        image cropped to a multiple of the factor."""
        check_is_fitted(self)
        listed = self._checked(images, clean=True)
        model = self.model_
        factors = (self._factor(factor),) if factor is not None or not model.factors else model.factors
        # A denoiser's factor is None; an upscaler's enlargement of the image's downsampling takes the stride.
        _check_least(listed, max(-(-model.stride // (f or 1)) * (f or 1) for f in factors), self._least_why())
        scores = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCORE_SEED)
            for image in listed:
                scores += self._scores(model, image, factors)
        return float(np.mean(scores))

    @staticmethod
    def _scores(model, image: np.ndarray, factors) -> list[float]:
        """The PSNR of restoring one clean image at each factor (None: of denoising it)."""
        clean = as_float(image if image.ndim == 2 else np.moveaxis(image, -1, 0), "the images")
        clean = clean if clean.ndim == 3 else clean[None]
        scores = []
        for f in factors:
            if f is None:
                noisy = model.corrupt(torch.from_numpy(clean)).numpy()
                target, out = clean, denoise_image(model, noisy)
            else:
                low = model.shrink(torch.from_numpy(clean)[None], f)[0].numpy()
                target = clean[:, : low.shape[1] * f, : low.shape[2] * f]
                out = upscale_image(model, low, f)
            scores.append(psnr(np.clip(out, 0, 1)[None], target[None]))
        return scores

    def _checked(self, images, clean: bool) -> list[np.ndarray]:
        """The images (:func:`_images`), each of the channels fitted on."""
        listed = _images(images, clean)
        for i, image in enumerate(listed):
            if _channels(image, i) != self.n_channels_in_:
                raise DataError(
                    f"images[{i}] has {_channels(image, i)} channel(s), but this {type(self).__name__} was fitted on "
                    f"images of {self.n_channels_in_}; give images of {self.n_channels_in_} channel(s)"
                )
        return listed

    def _factor(self, factor) -> int | None:
        """The factor an upscaler enlarges by: ``factor``, one of its ``factors``, or its only one
        (:func:`aekit.uses.enhance.upscaling_factor`); None for a denoiser, which takes none."""
        if self.model_.factors:
            return upscaling_factor(self.model_, None if factor is None else whole(factor, "factor", 1))
        if factor is not None:
            raise ParameterError(
                f"{named('factor', factor)} is for upscaling, and this {type(self).__name__} denoises "
                f"({named('restore', self.spec_.restore)}); leave factor out"
            )
        return None

    def _least_why(self) -> str:
        levels = self.spec_.levels
        return f"what {named('levels', levels)} halves {levels} times; give larger images"


def _images(images, clean: bool) -> list[np.ndarray]:
    """The images given (a list, or an array of n images) as one array each, refused in one line unless each is
    (height, width) or (height, width, channels) of at least one pixel, of uint8 pixels or finite floats, those in
    [0, 1] where ``clean``."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        listed = list(images)
    elif isinstance(images, (list, tuple)):
        listed = [np.asarray(image) for image in images]
    else:
        shape = f" of shape {images.shape}" if isinstance(images, np.ndarray) else ""
        raise DataError(
            f"the images are a {type(images).__name__}{shape}; give a list of images, each (height, width) or "
            "(height, width, channels), or an array (n, height, width) or (n, height, width, channels)"
        )
    if not listed:
        raise DataError("no images were given; give at least one")
    for i, image in enumerate(listed):
        if image.ndim not in (2, 3) or 0 in image.shape:
            raise DataError(
                f"images[{i}] has shape {image.shape}; give each image as (height, width) or (height, width, "
                "channels), of at least one pixel"
            )
        if image.dtype != np.uint8 and image.dtype.kind != "f":
            raise DataError(f"images[{i}] holds {image.dtype} values; give uint8 pixels (0-255) or floats in [0, 1]")
        if image.dtype.kind == "f":
            low, high = float(image.min()), float(image.max())
            if not (np.isfinite(low) and np.isfinite(high)):
                raise DataError(f"images[{i}] holds NaN or infinite values; give finite floats")
            if clean and (low < 0 or high > 1):
                raise DataError(
                    f"images[{i}] holds values from {low:.3g} to {high:.3g}, outside [0, 1]; give clean images as "
                    "uint8 pixels or floats in [0, 1] (8-bit values divided by 255)"
                )
    return listed


def _channels(image: np.ndarray, i: int) -> int:
    """The channels of an image (1 for (height, width)); an image that looks given channels first is refused."""
    if image.ndim == 2:
        return 1
    if image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"images[{i}] has shape {image.shape}: channels go last, (height, width, channels); give "
            "np.moveaxis(image, 0, -1)"
        )
    return image.shape[-1]


def _check_least(listed: list[np.ndarray], least: int, why: str) -> None:
    """Refuse an image smaller than ``least`` pixels either way, saying ``why`` it must be that large."""
    for i, image in enumerate(listed):
        height, width = image.shape[:2]
        if min(height, width) < least:
            raise DataError(f"images[{i}] is {width}x{height} pixels, smaller than {least}x{least}, {why}")


def _as_photos(listed: list[np.ndarray]) -> list[np.ndarray]:
    """The images as the trainer's photos, (channels, height, width) each: uint8 as it is, unless some are floats,
    then all float32 in [0, 1] (as a folder of 8- and 16-bit images is read)."""
    photos = [image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0) for image in listed]
    if all(photo.dtype == np.uint8 for photo in photos):
        return photos
    return [as_float(photo, "the images") for photo in photos]


PhotoRestorer.__doc__ += (
    "\n    Parameters (the network's; ``aekit train --model red``'s options)\n"
    "    ----------------------------------------------------------------\n"
    + parameter_doc(family(PhotoRestorer._model), ModelConfig)
)
