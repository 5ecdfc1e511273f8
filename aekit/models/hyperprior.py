"""The scale hyperprior codec (Balle, Minnen, Singh, Hwang and Johnston 2018, "Variational image compression with a
scale hyperprior"): GDN transforms of 5x5 stride-2 convolutions to a code map at 1/16 of the image, and a second,
smaller auto-encoder over the code map whose own code (the hyper-code, under a factorized prior) gives the Gaussian
scale of each value of the main code.

What the decoder needs to entropy-decode is the same on every machine: the scale of each value is not the network's
float output but an index into a fixed table of scales (:data:`SCALE_TABLE`, integers), computed from the hyper-code
by the hyper-decoder in integer arithmetic (:meth:`ScaleHyperprior.scale_indices`, Balle, Johnston and Minnen 2019,
"Integer networks for data compression with latent-variable models", here by quantizing the trained weights): integer
sums do not depend on their order, so neither on thread count, batch, CPU kind nor a GPU. Each scale's table of
probabilities is built once from the table (:func:`scale_tables`), not from any network output.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aekit import entropy_coding
from aekit.models import nets
from aekit.models.base import Loss, takes_examples
from aekit.models.config import register
from aekit.models.gdn import GDN as GDN  # importable here, where it was defined before the factorized family
from aekit.models.gdn import MAX_PIXELS, GDNCodec, GDNConfig, checked_map_size, down, up
from aekit.models.likelihood import LIKELIHOODS
from aekit.models.rate_distortion import TAIL_MASS, FactorizedPrior, _bounded

# The hyper-transforms' stride-2 layers: the hyper-code at 1/4 of the code map.
HYPER_LEVELS = 2
# The table of scales, in units of 2^-SCALE_BITS: t_0 = 451 (0.110), t_{k+1} = t_k + ceil(131 t_k / 1000), 64 of
# them up to 259: integers, so that every machine has the same table (the ratio 1.131 is Balle et al.'s spacing).
SCALE_BITS = 12
SCALE_LEVELS = 64


def _scale_table() -> tuple[int, ...]:
    table = [451]
    while len(table) < SCALE_LEVELS:
        table.append(table[-1] - (-table[-1] * 131 // 1000))
    return tuple(table)


SCALE_TABLE = _scale_table()
# The integer hyper-decoder: weights in units of 2^-WEIGHT_BITS (at most 2^WEIGHT_LIMIT of them), activations in
# units of 2^-SCALE_BITS, each in [-2^ACTIVATION_LIMIT, 2^ACTIVATION_LIMIT]: a layer's sum of at most 2^TERMS_LIMIT
# products stays within int64.
WEIGHT_BITS, WEIGHT_LIMIT, ACTIVATION_LIMIT, TERMS_LIMIT = 16, 20, 28, 14
# The bytes of the patches one integer convolution of the hyper-decoder holds at once.
PATCH_BYTES = 1 << 26


class Absolute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


def hyper_analysis(code_channels: int, channels: int) -> nn.Sequential:
    """h_a: |y|, padded to a multiple of 4, a 3x3 conv, ReLU, 5x5 stride-2 conv, ReLU, 5x5 stride-2 conv."""
    return nn.Sequential(
        Absolute(),
        nets.PadToMultiple(2**HYPER_LEVELS),
        nn.Conv2d(code_channels, channels, 3, padding=1),
        nn.ReLU(),
        down(channels, channels),
        nn.ReLU(),
        down(channels, channels),
    )


def hyper_synthesis(channels: int, code_channels: int) -> nn.Sequential:
    """h_s: 5x5 stride-2 transposed conv, ReLU, the same, ReLU, a 3x3 conv, ReLU: each value's scale (before its
    lower bound, the table's least scale)."""
    return nn.Sequential(
        up(channels, channels),
        nn.ReLU(),
        up(channels, channels),
        nn.ReLU(),
        nn.Conv2d(channels, code_channels, 3, padding=1),
        nn.ReLU(),
    )


@functools.cache
def scale_tables() -> tuple[entropy_coding.Tables, ...]:
    """The coder's table of each scale s_k = SCALE_TABLE[k] / 2^12: the integers -m .. m of a zero-mean Gaussian of
    scale s_k convolved with the unit box, p(v) = Phi((v + 1/2) / s_k) - Phi((v - 1/2) / s_k), m the least with
    both tails beyond it at most ``TAIL_MASS``, and the escape for the rest; computed once, in float64, from the
    table alone (their checksum in a compressed file tells a machine whose erfc differed)."""
    tables = []
    for t in SCALE_TABLE:
        scale = t / (1 << SCALE_BITS)

        def tail(v: int, scale: float = scale) -> float:
            """P(Y > v + 1/2), Y ~ N(0, scale^2)."""
            return 0.5 * math.erfc((v + 0.5) / (scale * math.sqrt(2)))

        half = next(m for m in range(1 << 20) if tail(m) <= TAIL_MASS)
        mass = [tail(-v - 1) - tail(-v) if v < 0 else tail(v - 1) - tail(v) for v in range(-half, half + 1)]
        tables.append(entropy_coding.frequency_tables(np.array([-half]), np.array([[*mass, 2 * tail(half)]])))
    return tuple(tables)


def gaussian_bits(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 p(y) per example, bits, of maps y (n, c, h, w) under zero-mean Gaussians of ``scale`` convolved with the
    unit box: p(y) = Phi((1/2 - |y|) / s) - Phi((-1/2 - |y|) / s) (the lower tail, where it keeps its precision),
    each p at least the factorized prior's bound."""
    magnitude = y.abs()
    p = torch.special.ndtr((0.5 - magnitude) / scale) - torch.special.ndtr((-0.5 - magnitude) / scale)
    return -torch.log2(_bounded(p)).flatten(1).sum(1)


class LowerBound(torch.autograd.Function):
    """max(x, bound), whose gradient passes where x is at or above the bound, or where a step against it raises x
    (Balle's lower bound): a scale held at the table's least is not pushed further down, below the last ReLU's zero,
    where no gradient could raise it again for the values that need a larger one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, bound)
        return torch.maximum(x, bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, bound = ctx.saved_tensors
        return grad * ((x >= bound) | (grad < 0)).to(grad.dtype), None


class ScaleHyperprior(GDNCodec):
    """The scale hyperprior (Balle et al. 2018), the GDN codec (:class:`GDNCodec`) whose code map's density is
    conditioned on a hyper-code:

    loss = -log p(x | g_s(y~)) + lambda (R(y~ | z~) + R(z~)),  y~ = g_a(x) + u,  z~ = h_a(y) + u',

    R(z) the bits of the hyper-code under a factorized prior (:class:`FactorizedPrior`), R(y | z) those of the code
    map under zero-mean Gaussians whose scales are h_s(z) (at least the table's least scale). Evaluated and coded,
    both codes are rounded and each scale is replaced by the table's scale at or above it (:data:`SCALE_TABLE`).

    Compressing codes z under the prior's tables and y under the table of each value's scale index, which
    :meth:`scale_indices` computes from z in integer arithmetic on any machine alike (the module's docstring).
    """

    code_storage = "hyper-maps"

    def __init__(self, networks: tuple[nn.Module, ...], likelihood, prior: FactorizedPrior, rate_lambda, **settings):
        """``networks``: g_a, g_s (cropping to the training size after it), h_a and h_s; ``prior``: the hyper-code's."""
        super().__init__(*networks[:2], likelihood, prior, rate_lambda, **settings)
        self.hyper_analysis, self.hyper_synthesis = networks[2:]
        self.register_buffer("scales", torch.tensor(SCALE_TABLE, dtype=torch.float32) / (1 << SCALE_BITS), False)

    def loss(self, x: torch.Tensor):
        x = self.training_input(x)
        y = self.encoder[0](x).float()
        if self.training:
            z = self.hyper_analysis(y).float()
            y, z = y + torch.rand_like(y) - 0.5, z + torch.rand_like(z) - 0.5
        else:  # as compressing codes them
            y, z = torch.round(y), self.hyper_symbols(y).float()
        rec = self.likelihood.nll(self.decoder(y), x).mean()
        hyper_rate = self.prior.rate_bits(z).mean()
        rate = gaussian_bits(y, self._scales(z, y.shape[-2:])).mean() + hyper_rate
        parts = {"reconstruction": rec, "rate_bits": rate, "hyper_rate_bits": hyper_rate}
        return Loss(rec + self.rate_lambda * rate, parts)

    def _scales(self, z: torch.Tensor, size) -> torch.Tensor:
        """The Gaussian scale of each value of the code map of ``size`` (h, w) that the hyper-code z gives: h_s(z)
        cropped, at least the table's least scale (:class:`LowerBound`); outside training, the table's scale at or
        above it."""
        scale = LowerBound.apply(self.hyper_synthesis(z.float())[..., : size[0], : size[1]], self.scales[0])
        if self.training:
            return scale
        return self.scales[torch.bucketize(scale, self.scales).clamp_max(len(self.scales) - 1)]

    @takes_examples
    def rate_bits(self, x: torch.Tensor) -> torch.Tensor:
        """R(y | z) + R(z) per example, bits: the rounded code map under the table's scales that its rounded
        hyper-code gives, and the hyper-code under its prior."""
        latent = self.latent_maps(x)
        y, z = torch.round(latent), self.hyper_symbols(latent).float()
        return gaussian_bits(y, self._scales(z, y.shape[-2:])) + self.prior.rate_bits(z)

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """The code map's height and width for an image of ``height`` x ``width`` (a DataError past MAX_PIXELS)."""
        # The limit as this module names it, read when called (its tests lower it here).
        return checked_map_size(height, width, MAX_PIXELS)

    @staticmethod
    def hyper_map_size(height: int, width: int) -> tuple[int, int]:
        """The hyper-code's height and width for a code map of ``height`` x ``width``."""
        return nets.code_map_size(height, width, HYPER_LEVELS)

    @torch.no_grad()
    def latent_maps(self, x: torch.Tensor) -> torch.Tensor:
        """g_a(x), the code maps of images of any one size (n, channels, H, W) before rounding: float32 (n,
        code_dim, ceil(H / 16), ceil(W / 16)), what compressing codes (their rounding, and :meth:`hyper_symbols` of
        them); a DataError for images of more than MAX_PIXELS."""
        self.map_size(*x.shape[-2:])
        return self.encoder[0](x).float()

    @takes_examples
    def latent_codes(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`latent_maps` of examples of the model's size, in any layout (``aekit compress`` of an array)."""
        return self.latent_maps(x)

    @torch.no_grad()
    def hyper_symbols(self, y: torch.Tensor) -> torch.Tensor:
        """The integer hyper-codes that compressing sends for code maps y (n, code_dim, h, w) before their rounding:
        of round(h_a(y)), the hyper-encoder's input as training showed it, and round(h_a(round(y))), the map the
        decoder gets, each example's under which its two codes cost fewer bits (neither is the better for every model
        and image: the noise of training stands for the rounding only on average; the decoder reads either alike).
        int64 (n, channels, ceil(h / 4), ceil(w / 4))."""
        rounded = torch.round(y.float())
        candidates = [torch.round(self.hyper_analysis(v)).float() for v in (y.float(), rounded)]
        bits = [gaussian_bits(rounded, self._scales(z, y.shape[-2:])) + self.prior.rate_bits(z) for z in candidates]
        return torch.where((bits[1] < bits[0])[:, None, None, None], candidates[1], candidates[0]).long()

    def scale_tables(self) -> tuple[entropy_coding.Tables, ...]:
        """The coder's table of each scale index (:func:`scale_tables`)."""
        return scale_tables()

    @torch.no_grad()
    def scale_indices(self, z: np.ndarray, height: int, width: int) -> np.ndarray:
        """The index into :data:`SCALE_TABLE` of each value of the code map (code_dim, ``height``, ``width``) that
        the integer hyper-code z (channels, h', w') gives: h_s in integer arithmetic on the CPU (weights rounded to
        multiples of 2^-16, activations floored to multiples of 2^-12 after each layer), the least k whose scale is
        at or above each output. int64; the same on every machine."""
        a = (torch.from_numpy(np.asarray(z, np.int64)) << SCALE_BITS).clamp(
            -(1 << ACTIVATION_LIMIT), 1 << ACTIVATION_LIMIT
        )
        for layer in self.hyper_synthesis:
            if isinstance(layer, nn.ReLU):
                a = a.clamp(0, 1 << ACTIVATION_LIMIT)
                continue
            weight, bias = _integer_weights(layer)
            if isinstance(layer, nn.ConvTranspose2d):
                spread = torch.zeros(a.shape[0], 2 * a.shape[1] - 1, 2 * a.shape[2] - 1, dtype=torch.long)
                spread[:, ::2, ::2] = a
                a = F.pad(spread, (2, 3, 2, 3))
            else:
                a = F.pad(a, (1, 1, 1, 1))
            a = (_integer_conv(a, weight) + bias[:, None, None]) >> WEIGHT_BITS
        table = torch.tensor(SCALE_TABLE, dtype=torch.long)
        indices = torch.searchsorted(table, a[:, :height, :width].contiguous()).clamp_max(len(table) - 1)
        return indices.numpy()


def _integer_weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution's weights as integers of a plain (not transposed) convolution: in units of 2^-16 (the bias in
    units of 2^-28, as the sums it is added to), int64 on the CPU. A transposed convolution's kernel is flipped and
    its in and out channels swapped (it is then applied to its input spread by zeros)."""
    weight = layer.weight.detach().cpu().double()
    if isinstance(layer, nn.ConvTranspose2d):
        weight = weight.flip(2, 3).transpose(0, 1)
    limit = float(1 << WEIGHT_LIMIT)
    integer = torch.round(weight * (1 << WEIGHT_BITS)).clamp(-limit, limit).long()
    bias = torch.round(layer.bias.detach().cpu().double() * (1 << (WEIGHT_BITS + SCALE_BITS)))
    return integer, bias.clamp(-float(1 << 60), float(1 << 60)).long()


def _integer_conv(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The valid convolution of an int64 map a (c, H, W) with int64 weights (o, c, k, k): exact integer sums, a
    block of output rows at a time (at most PATCH_BYTES of patches)."""
    out_channels, channels, k, _ = weight.shape
    height, width = a.shape[1] - k + 1, a.shape[2] - k + 1
    matrix = weight.reshape(out_channels, channels * k * k)
    rows = max(1, PATCH_BYTES // (8 * channels * k * k * width))
    blocks = []
    for top in range(0, height, rows):
        end = min(height, top + rows)
        patches = torch.stack([a[:, top + i : end + i, j : j + width] for i in range(k) for j in range(k)], 1)
        blocks.append((matrix @ patches.reshape(channels * k * k, -1)).reshape(out_channels, end - top, width))
    return torch.cat(blocks, 1)


@register
@dataclass(frozen=True)
class HyperpriorConfig(GDNConfig):
    """The scale hyperprior codec of photos: its channels and the weight of the rate."""

    family = "hyperprior"
    label = "Hyperprior"
    model_class = ScaleHyperprior
    noun = "the hyperprior"
    # The integer hyper-decoder's sums: at most 2^TERMS_LIMIT products of a 5x5 kernel over N channels.
    max_channels = (1 << TERMS_LIMIT) // 25

    def build(self) -> ScaleHyperprior:
        n, m = self.channels, self.code_dim
        networks = (*self.transforms(), hyper_analysis(m, n), hyper_synthesis(n, m))
        prior = FactorizedPrior(n)
        return ScaleHyperprior(networks, LIKELIHOODS[self.likelihood], prior, self.rate_lambda, **self.model_settings())
