"""What every model shares: the loss record, training phases, and encode/decode that take numpy too."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from aekit.data.layout import as_float, to_shape, to_uint8
from aekit.errors import DataError
from aekit.models.standardize import Standardize


class Loss(NamedTuple):
    """A scalar to minimise and its named parts (batch means), for logging."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


@dataclass
class Phase:
    """One optimizer step of a training iteration: which parameters it updates and the loss it minimises."""

    name: str
    parameters: list[nn.Parameter]
    loss: Callable[[torch.Tensor], Loss]


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters (or, for PCA, its buffers) live."""
    tensor = next(iter(module.parameters()), None)
    return (tensor if tensor is not None else next(iter(module.buffers()))).device


def rows_tensor(x: np.ndarray) -> torch.Tensor:
    """A block of rows (a numpy array, possibly a slice of a read-only memory map) as a CPU tensor of its type."""
    block = np.ascontiguousarray(x)
    return torch.from_numpy(block if block.flags.writeable else block.copy())


def float_batch(x: torch.Tensor) -> torch.Tensor:
    """A batch as models take it: uint8 8-bit intensities divided by 255 (a store's and a device's stored type),
    anything else as it is."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def _examples_in(model: nn.Module, x, name: str):
    """A user's examples (a numpy array, anything numpy takes, or a tensor) as the model's tensor of shape
    (n, *example_shape), and how to put examples the model returns back in their layout and type.

    Any layout :func:`aekit.data.layout.to_shape` reads is taken (flat rows, channels last, ...) and given back.
    uint8 values are 8-bit intensities: divided by 255 on the way in, rounded back to uint8 on the way out. numpy
    arrays are checked for type, size and finiteness with one-line DataErrors; float tensors keep their device, type
    and gradients (one already of the model's shape passes as it is: the fast path)."""
    source = f"the input of {type(model).__name__}.{name}"
    if isinstance(x, torch.Tensor):
        eight_bit, values = x.dtype == torch.uint8, float_batch(x)
    else:
        array = np.asarray(x)
        eight_bit, values = array.dtype == np.uint8, as_float(array, source)
    restore = _unchanged
    if model.example_shape is not None:
        values, restore = to_shape(values, model.example_shape, source, "the model takes")
    if not isinstance(values, torch.Tensor):
        values = torch.from_numpy(np.ascontiguousarray(values)).to(device_of(model))
    return values, (lambda y: _eight_bit(restore(y))) if eight_bit else restore


def _unchanged(y):
    return y


def _eight_bit(y):
    """[0, 1] intensities (an array or a tensor) as 8-bit pixels, clipped and rounded."""
    return to_uint8(y) if isinstance(y, np.ndarray) else y.clamp(0, 1).mul(255).round().to(torch.uint8)


def takes_examples(method):
    """Let a method of examples take numpy arrays (and uint8 and any layout anywhere): numpy in, numpy out computed
    without gradients; tensors in, tensors out. What the method returns is given back in the caller's layout (and
    type) where it is examples (``reconstruct``); codes and indices are (n, ...) whatever the layout."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        tensor, back = _examples_in(self, x, method.__name__)
        if isinstance(x, torch.Tensor):
            out = method(self, tensor, *args, **kwargs)
        else:
            with torch.no_grad():
                out = method(self, tensor, *args, **kwargs).cpu().numpy()
        return back(out) if method.__name__ == "reconstruct" else out

    return wrapper


def takes_codes(method):
    """Let a method of codes take numpy arrays: (n, code_dim) finite numbers in, numpy out, without gradients."""

    @functools.wraps(method)
    def wrapper(self, z, *args, **kwargs):
        if isinstance(z, torch.Tensor):
            return method(self, z, *args, **kwargs)
        codes = as_float(z, f"the codes given to {type(self).__name__}.{method.__name__}")
        shape = self.code_shape
        if shape and codes.ndim == 2 and codes.shape[1] == math.prod(shape):
            codes = codes.reshape(len(codes), *shape)  # flat codes (a probe's, a projector's) of a code map
        if codes.ndim < 2 or (shape is not None and codes.shape[1:] != shape):
            raise DataError(
                f"codes of shape {codes.shape} were given to {type(self).__name__}.{method.__name__}, "
                f"which takes (n, {', '.join(map(str, shape or ['...']))}); give one code per row"
            )
        with torch.no_grad():
            return method(self, torch.from_numpy(codes).to(device_of(self)), *args, **kwargs).cpu().numpy()

    return wrapper


class AutoEncoder(nn.Module):
    """Auto-encoder: loss = -log p(x | decoder(encoder(x))), cross-entropy or sum of squared differences.

    ``standardize`` (a :class:`Standardize`, set by ``build_model`` for real-valued data) makes the networks work on
    each feature's standardized values: encode and the loss see (x - center) / scale, decode hands back the data's
    units. ``binarize`` turns on dynamic binarization: while training, every loss sees a fresh draw
    x_b ~ Bernoulli(x) of the [0, 1] intensities instead of x. ``upscale_factor`` says the encoder first averages
    f x f pixel blocks: the loss is then -log p(x | decoder(encoder(downsample(x)))), a super-resolution model.
    ``code_dim``, ``code_shape`` (default (code_dim,); a code map's (channels, h, w)) and ``example_shape`` (where
    given) are what decode and encode check their inputs against.
    ``config`` is the :class:`aekit.models.config.ModelConfig` the model was built from (None for one built by
    hand).
    """

    config = None
    closed_form = False  # PCA's is: fitted without training steps
    # What a model needs to compress its codes losslessly: the size of its codebook (None: its codes are real).
    codebook_size: int | None = None
    # The learned density its integer codes are entropy-coded under (None: it has none).
    entropy_model: nn.Module | None = None
    # How `aekit compress` stores its codes (aekit.uses.compress.STORAGES): real codes quantized to --bits; a codebook
    # model's indices, "indices"; a rate-distortion model's integer codes, "entropy", or code maps, "maps"; a
    # hyperprior's code maps and hyper-codes, "hyper-maps".
    code_storage = "quantized"
    # What else it can do, asked by evaluation, the figures and the estimators instead of its class. ``variational``:
    # it has an approximate posterior q(z|x) beside the prior N(0, I) (``posterior(x) -> (mu, logvar)`` and
    # ``elbo_terms``), hence a variational bound on log p(x): the negative ELBO and the importance-weighted likelihood
    # estimate. ``noise``: the corruption it learns to undo (with ``noise_level`` and ``corrupt(x)``), None for one
    # trained on clean input.
    variational = False
    noise: str | None = None
    # ``takes_any_size``: ``restore(x)`` takes images (n, C, H, W) of any H, W to the same shape (a fully
    # convolutional model), so that whole photos are denoised at their own size (aekit.uses.enhance).
    takes_any_size = False
    # ``gives_codes``: its encode gives a code that stands for the example (what the probes, the codes figures, the
    # projector, compression and anomaly scores use); False for one whose output does not pass through its code.
    gives_codes = True
    # ``factors``: those by which ``enlarge(low, factor)`` restores images from their bicubic ``shrink(x, factor)``
    # (none for a model that does not; an upscaler of the net families has ``upscale_factor`` instead).
    factors: tuple[int, ...] = ()

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood,
        *,
        code_dim: int | None = None,
        code_shape: tuple[int, ...] | None = None,
        example_shape: tuple[int, ...] | None = None,
        binarize: bool = False,
        upscale_factor: int | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.standardize = Standardize()
        self.code_dim, self.example_shape = code_dim, example_shape
        self.code_shape = code_shape or (None if code_dim is None else (code_dim,))
        self.binarize, self.upscale_factor = binarize, upscale_factor

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the loss sees it: standardized, and a fresh binary draw per step with ``binarize`` on while
        training."""
        x = self.standardize(x)
        return torch.bernoulli(x) if self.binarize and self.training else x

    @takes_examples
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each example."""
        return self.encoder(self.standardize(x))

    @takes_codes
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean for each code (sigmoid output for Bernoulli, linear for Gaussian), in the data's
        units."""
        return self.standardize.inverse(self.likelihood.mean(self.decoder_output(z)))

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters for each code (Bernoulli logits, the Gaussian's mean) in the networks'
        standardized units: what ``decode`` takes the likelihood's mean of, and what log p(x | z) is measured with."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @takes_examples
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def reconstruction_nll(self, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(target | decoder(encoder(x_in))) per example, both in the networks' (standardized) units."""
        return self.likelihood.nll(self.decoder(self.encoder(x_in)), target)

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        rec = self.reconstruction_nll(x, x).mean()
        return Loss(rec, {"reconstruction": rec})

    def phases(self) -> list[Phase]:
        """The optimizer steps of one training iteration; a plain auto-encoder has one."""
        return [Phase("model", list(self.parameters()), self.loss)]
