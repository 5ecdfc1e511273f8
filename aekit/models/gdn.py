"""Balle's GDN transforms and the codec built of them, which the factorized and hyperprior families share: 5x5
stride-2 convolutions with generalized divisive normalization between them, from an image of any size to a code map
at 1/16 of its height and width and back (Balle, Laparra and Simoncelli 2017, "End-to-end optimized image
compression"; CompressAI's ``bmshj2018-factorized``), and the options both families take."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aekit.errors import DataError
from aekit.models import nets
from aekit.models.config import ModelConfig, option
from aekit.models.rate_distortion import RateDistortionAE
from aekit.naming import option as named

# The transforms' stride-2 layers: a code map at 1/2^4 = 1/16 of the image.
LEVELS = 4
# The most pixels an image coded whole: the transforms' activations of one (channels 128) take about 1 GB.
MAX_PIXELS = 1 << 23
# GDN's least beta, which keeps its denominator away from zero.
BETA_MIN = 1e-6


class GDN(nn.Module):
    """Generalized divisive normalization (Balle, Laparra and Simoncelli 2016) of a map's channels at each position:

        y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)   (``inverse``: y_i = x_i * sqrt(...), IGDN),

    beta = b^2 + BETA_MIN > 0 and gamma = g^2 >= 0 by reparameterization; it starts at beta = 1, gamma = 0.1 I."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.full((channels,), math.sqrt(1 - BETA_MIN)))
        self.gamma = nn.Parameter(math.sqrt(0.1) * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta**2 + BETA_MIN
        norm = F.conv2d(x * x, (self.gamma**2)[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def down(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 5x5 stride-2 convolution: ceil(H / 2) x ceil(W / 2) of an even H x W, exactly half."""
    return nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2)


def up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """A 5x5 stride-2 transposed convolution: twice the height and width."""
    return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1)


def analysis(in_channels: int, channels: int, code_channels: int) -> nn.Sequential:
    """g_a: the image padded to a multiple of 16 (its last row and column repeated), then conv, GDN, conv, GDN, conv,
    GDN, conv, each conv 5x5 stride 2: a code map of ceil(H / 16) x ceil(W / 16)."""
    layers: list[nn.Module] = [nets.PadToMultiple(2**LEVELS), down(in_channels, channels)]
    for _ in range(LEVELS - 2):
        layers += [GDN(channels), down(channels, channels)]
    return nn.Sequential(*layers, GDN(channels), down(channels, code_channels))


def synthesis(code_channels: int, channels: int, out_channels: int) -> nn.Sequential:
    """g_s, the mirror of :func:`analysis`: transposed conv, IGDN, ..., transposed conv, 16 times the map's size."""
    layers: list[nn.Module] = [up(code_channels, channels)]
    for _ in range(LEVELS - 2):
        layers += [GDN(channels, inverse=True), up(channels, channels)]
    return nn.Sequential(*layers, GDN(channels, inverse=True), up(channels, out_channels))


def checked_map_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The code map's height and width for an image of ``height`` x ``width`` (a DataError past ``max_pixels``)."""
    if height * width > max_pixels:
        raise DataError(
            f"an image of {height}x{width} pixels is more than the {max_pixels} this model codes whole; cut it "
            "into smaller images"
        )
    return nets.code_map_size(height, width, LEVELS)


class GDNCodec(RateDistortionAE):
    """Balle et al.'s (2017) codec: the rate-distortion auto-encoder (its loss, rate and coding those of
    :class:`RateDistortionAE`) whose encoder is :func:`analysis` and decoder :func:`synthesis`, the code map of an
    image of any size (up to MAX_PIXELS) each channel under a density of its own of the factorized prior."""

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """The code map's height and width for an image of ``height`` x ``width`` (a DataError past MAX_PIXELS)."""
        return checked_map_size(height, width, MAX_PIXELS)

    @torch.no_grad()
    def map_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """The integer code maps of images (n, channels, H, W), as the rate-distortion model's; a DataError for images
        of more than MAX_PIXELS."""
        self.map_size(*x.shape[-2:])
        return super().map_symbols(x)


@dataclass(frozen=True)
class GDNConfig(ModelConfig):
    """What the families of GDN transforms share: images of any size coded whole, the transforms' channels and the
    weight of the rate."""

    sized_by = ("channels", "code_dim")
    # How a message names the family's model, and the most channels N it may have (None: no bound of its own).
    noun: ClassVar[str]
    max_channels: ClassVar[int | None] = None

    code_dim: int = option(
        192, "M, the code map's channels (the map at 1/16 of the image's height and width)", sklearn="n_components"
    )
    channels: int = option(
        128,
        "factorized and hyperprior: N, the channels of the GDN transforms' hidden layers (and of the hyperprior's "
        "hyper-code)",
    )
    rate_lambda: float = option(
        0.01,
        "weight lambda of the rate, nats per bit: loss = distortion (nats per example) + lambda * rate (bits per "
        "example of the rounded code under the learned prior); larger gives fewer bits and larger errors",
    )

    def __post_init__(self):
        # It codes photos at any size, which a per-pixel standardization fitted at one size cannot follow, whatever
        # --standardize the data would have chosen.
        object.__setattr__(self, "standardize", False)
        super().__post_init__()

    @property
    def code_shape(self) -> tuple[int, ...]:
        """The code map of an image of the training size: (code_dim, ceil(H / 16), ceil(W / 16))."""
        return (self.code_dim, *nets.code_map_size(*self.shape[-2:], LEVELS))

    def problems(self) -> list[str]:
        problems = super().problems()
        if len(self.shape) != 3:
            problems.append(f"{self.noun} codes images (channels, height, width), not examples of shape {self.shape}")
        most = self.max_channels
        if self.channels < 1 or most is not None and self.channels > most:
            bounds = "at least 1" if most is None else f"1 to {most}"
            problems.append(f"{named('channels', self.channels)} must be {bounds}, e.g. 128")
        if not 0 <= self.rate_lambda < math.inf:  # also refuses NaN
            problems.append(f"{named('rate_lambda', self.rate_lambda)} must be a finite number >= 0, e.g. 0.01")
        return problems

    def transforms(self) -> tuple[nn.Sequential, nn.Sequential]:
        """g_a and g_s, cropping to the training size after it."""
        colours, height, width = self.shape
        n, m = self.channels, self.code_dim
        return analysis(colours, n, m), nn.Sequential(synthesis(m, n, colours), nets.CropTo(height, width))

    def model_settings(self) -> dict:
        """What the model's constructor takes beside its networks, likelihood, prior and lambda."""
        return {"code_dim": self.code_dim, "code_shape": self.code_shape, "example_shape": tuple(self.shape)}
