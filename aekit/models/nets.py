"""Encoder and decoder builders: an MLP for any shape, a small convolutional pair for images, and a fully
convolutional pair whose code is a map, for images of any size.

An encoder maps a batch of examples (n, *shape) to (n, out_features) (the fully convolutional one: to a code map
(n, code_channels, h, w)); a decoder maps codes back to (n, *shape) *pre-activation* values (logits or means), leaving
the output nonlinearity to the likelihood.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aekit.errors import DataError


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU between them (and dropout after each ReLU), the last one linear."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_encoder(
    shape: tuple[int, ...], hidden: tuple[int, ...], out_features: int, dropout: float = 0.0, input_dropout: float = 0.0
) -> nn.Sequential:
    """Flatten, optionally drop input elements, then an MLP."""
    front: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        front.append(nn.Dropout(input_dropout))
    return nn.Sequential(*front, *mlp(math.prod(shape), hidden, out_features, dropout))


def mlp_decoder(code_dim: int, hidden: tuple[int, ...], shape: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """The mirror of :func:`mlp_encoder`: an MLP to ``prod(shape)`` values, reshaped to ``shape``."""
    return nn.Sequential(*mlp(code_dim, tuple(reversed(hidden)), math.prod(shape), dropout), nn.Unflatten(1, shape))


def _conv_sizes(size: int, layers: int) -> list[int]:
    """Spatial sizes after each stride-2, kernel-4, padding-1 convolution (each halves, rounding down)."""
    sizes = [size]
    for _ in range(layers):
        sizes.append(sizes[-1] // 2)
    return sizes


def conv_encoder(
    shape: tuple[int, ...],
    channels: tuple[int, ...],
    out_features: int,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> nn.Sequential:
    """Stride-2 convolutions (each halves height and width) with ReLU, then a linear layer to ``out_features``."""
    in_channels, height, width = _image_shape(shape, len(channels))
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
    previous = in_channels
    for c in channels:
        layers += [nn.Conv2d(previous, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = c
    h, w = _conv_sizes(height, len(channels))[-1], _conv_sizes(width, len(channels))[-1]
    layers += [nn.Flatten(), nn.Linear(previous * h * w, out_features)]
    return nn.Sequential(*layers)


def conv_decoder(
    code_dim: int, channels: tuple[int, ...], shape: tuple[int, ...], dropout: float = 0.0
) -> nn.Sequential:
    """The mirror of :func:`conv_encoder`: transposed convolutions back to exactly ``shape`` (odd sizes included)."""
    out_channels, height, width = _image_shape(shape, len(channels))
    hs, ws = _conv_sizes(height, len(channels)), _conv_sizes(width, len(channels))
    widths = list(reversed(channels))
    layers: list[nn.Module] = [
        nn.Linear(code_dim, widths[0] * hs[-1] * ws[-1]),
        nn.ReLU(),
        nn.Unflatten(1, (widths[0], hs[-1], ws[-1])),
    ]
    targets = list(zip(reversed(hs[:-1]), reversed(ws[:-1])))
    for i, (h, w) in enumerate(targets):
        last = i == len(targets) - 1
        previous = widths[i]
        nxt = out_channels if last else widths[i + 1]
        # A stride-2 transposed convolution doubles the size; output_padding restores the odd row/column lost going in.
        h_in, w_in = (hs[-1 - i], ws[-1 - i])
        layers.append(
            nn.ConvTranspose2d(
                previous, nxt, kernel_size=4, stride=2, padding=1, output_padding=(h - 2 * h_in, w - 2 * w_in)
            )
        )
        if not last:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _image_shape(shape: tuple[int, ...], layers: int) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise DataError(
            f"the convolutional network needs images (channels, height, width), got examples of shape "
            f"{tuple(shape)}; use --net mlp"
        )
    channels, height, width = shape
    if min(height, width) < 2**layers:
        raise DataError(
            f"images of {height}x{width} are too small for {layers} stride-2 convolutions; "
            f"use fewer --hidden channels or --net mlp"
        )
    return channels, height, width


class PadToMultiple(nn.Module):
    """Repeat an image's last row and column until its height and width are multiples of ``multiple``: the size that
    a stack of log2(multiple) stride-2 convolutions halves exactly, down to a map of ceil(H / m) x ceil(W / m)."""

    def __init__(self, multiple: int):
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Padded by 0 too, without a branch on the size: an exported graph (aekit.uses.export) then pads images of
        # every size, whichever size it was traced with.
        return F.pad(x, (0, -x.shape[-1] % self.multiple, 0, -x.shape[-2] % self.multiple), mode="replicate")


class CropTo(nn.Module):
    """The top-left ``height`` x ``width`` pixels of a batch of images: drops what :class:`PadToMultiple` added."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.height, : self.width]


def fully_conv_encoder(in_channels: int, channels: tuple[int, ...], code_channels: int) -> nn.Sequential:
    """Convolutions only, so it takes images of any size: padding to a multiple of 2^L (L = len(channels)), L
    stride-2 convolutions with ReLU (each halving height and width), and a 3x3 convolution to ``code_channels``. An
    image of H x W gives a code map (code_channels, ceil(H / 2^L), ceil(W / 2^L))."""
    layers: list[nn.Module] = [PadToMultiple(2 ** len(channels))]
    previous = in_channels
    for c in channels:
        layers += [nn.Conv2d(previous, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        previous = c
    return nn.Sequential(*layers, nn.Conv2d(previous, code_channels, kernel_size=3, padding=1))


def fully_conv_decoder(code_channels: int, channels: tuple[int, ...], shape: tuple[int, ...]) -> nn.Sequential:
    """The mirror of :func:`fully_conv_encoder`: a 3x3 convolution and L stride-2 transposed convolutions (each
    doubling), giving 2^L times the code map's size, then cropped to ``shape``'s height and width. Its first element,
    ``decoder[0]``, decodes a code map of any size (to the padded size of the image it came from)."""
    out_channels, height, width = _image_shape(shape, 0)
    widths = list(reversed(channels))
    layers: list[nn.Module] = [nn.Conv2d(code_channels, widths[0], kernel_size=3, padding=1), nn.ReLU()]
    for previous, nxt in zip(widths, [*widths[1:], out_channels]):
        layers += [nn.ConvTranspose2d(previous, nxt, kernel_size=4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(nn.Sequential(*layers[:-1]), CropTo(height, width))


def code_map_size(height: int, width: int, layers: int) -> tuple[int, int]:
    """The code map's height and width that :func:`fully_conv_encoder` of ``layers`` stride-2 layers gives an image."""
    return -(-height // 2**layers), -(-width // 2**layers)
