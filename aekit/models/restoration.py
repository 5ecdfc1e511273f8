"""The restoration family ``red`` (after Mao, Shen and Yang 2016, "Image restoration using very deep convolutional
encoder-decoder networks with symmetric skip connections"): a fully convolutional encoder-decoder that learns to undo
Gaussian noise (``--restore denoise``) or bicubic downsampling (``--restore upscale``) of images of any size and
channels.

The network, for an image x (n, c, H, W) in [0, 1], H and W padded by reflection to multiples of 2^levels:

    restore(x) = x + tail(d_1),   e_0 = head(x),   e_l = down_l(e_{l-1}),
    d_L = e_L,   d_{l-1} = relu(up_l(d_l) + e_{l-1}),

head a 3x3 convolution to ``width`` channels, down_l a 3x3 convolution of stride 2 then ``blocks`` - 1 3x3
convolutions, up_l a 4x4 transposed convolution of stride 2 then ``blocks`` - 1 3x3 convolutions (ReLU after each),
tail a 3x3 convolution back to c channels. Every level keeps ``width`` channels, as RED-Net's 64 do: the skips add
maps of one size. The loss of a batch of clean images is the sum of squared differences per image between
restore(corrupted x) and x, the corruption drawn afresh every call: Gaussian noise of a sigma drawn per image
(uniformly over ``sigma`` = low,high: a blind denoiser) or the masking or salt-and-pepper noise of ``noise_level``
(``--noise``, as the denoising auto-encoder's), or the bicubic low-resolution version at a factor drawn from
``factors`` enlarged back by bicubic interpolation.

Why this shape (measured on this 2-core CPU, shared and loaded, one torch thread; the defaults, width 32, levels 2,
blocks 2, trained 300 Adam steps at lr 1e-3 on batches of 16 random 40x40 crops of train400 with flips and rotations,
at sigma 25; PSNR on the 96x96 centres of the 68 BSD68 images with one seeded draw of the noise): the noisy input
20.43 dB; the network as above 27.18 dB; without the skips 22.54 dB (what the stride-2 encoder drops of the detail
does not come back); without the residual output 26.58 dB (the net must first learn to copy its input). Those steps ran
at 3.0 a second (16 crops of 40x40 each), with the machine's load at about 13 on its 2 cores; a small net steps about
20 times faster on one torch thread than on two on such a loaded machine.

Its bottleneck map is no code to use: ``decode(encode(x))`` is not the restoration, which the skips carry. So the
model says ``gives_codes = False``; the probes, the codes figures, the projector, compression and anomaly scores ask
that and skip or refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit.errors import AekitError, DataError
from aekit.models.autoencoders import corrupt, noise_level_option, noise_option, noise_problems
from aekit.models.base import AutoEncoder, Loss
from aekit.models.config import ModelConfig, option, register
from aekit.models.likelihood import Gaussian
from aekit.naming import option as named

TASKS = ("denoise", "upscale")
# Noise levels on the 0-255 scale a denoiser is trained at: none up to the strongest that benchmarks use and more.
MOST_SIGMA = 255


def _conv(into: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(into, out, 3, stride, 1)


class Level(nn.Module):
    """One level of the encoder and its mirror in the decoder, of ``width`` channels and ``blocks`` convolutions
    each."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.down = nn.ModuleList([_conv(width, width, 2)] + [_conv(width, width) for _ in range(blocks - 1)])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(width, width, 4, 2, 1)] + [_conv(width, width) for _ in range(blocks - 1)]
        )

    @staticmethod
    def run(layers: nn.ModuleList, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """The layers in turn, a ReLU after each; ``skip`` added before the first ReLU."""
        for i, layer in enumerate(layers):
            x = layer(x)
            x = torch.relu(x + skip if i == 0 and skip is not None else x)
        return x


class Restorer(AutoEncoder):
    """The restoration network (module docstring). ``restore`` takes images of any height and width; ``encode``
    gives the bottleneck map of images of the run's size, which ``decode`` cannot undo (the skips carry the detail):
    ``gives_codes`` is False."""

    gives_codes = False
    takes_any_size = True

    def __init__(self, config: RestorationConfig):
        channels = config.shape[0]
        self.levels = config.levels
        head = _conv(channels, config.width)
        levels = nn.ModuleList([Level(config.width, config.blocks) for _ in range(config.levels)])
        super().__init__(nn.ModuleList([head, levels]), _conv(config.width, channels), Gaussian)
        self.example_shape = tuple(config.shape)
        self.task, self.sigma = config.restore, config.sigma
        self.factors = config.factors if config.restore == "upscale" else ()
        # What the denoising figure and metric ask of a denoiser: its noise, Gaussian at the top of a blind range.
        self.noise = config.noise if config.restore == "denoise" else None
        self.noise_level = max(config.sigma) / 255 if config.noise == "gaussian" else config.noise_level
        self.stride = 2**config.levels
        # Pixels beyond a tile that an output pixel depends on: each 3x3 convolution at scale s reaches s further
        # (the head, the tail, and blocks - 1 per level each way), each stride-2 convolution into scale 2s reaches s,
        # and each transposed convolution from scale 2s reaches 2s: 3 blocks 2^(l-1) at level l.
        self.margin = 2 + 3 * config.blocks * (self.stride - 1)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """x padded on the bottom and right by reflection to multiples of ``stride``."""
        height, width = x.shape[-2:]
        if min(height, width) < self.stride:
            raise DataError(
                f"an image of {height}x{width} is smaller than this run's {self.stride} pixels (2^levels, "
                f"{named('levels', self.levels)}); give images of at least {self.stride}x{self.stride}"
            )
        return F.pad(x, (0, -width % self.stride, 0, -height % self.stride), mode="reflect")

    def _encoded(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps e_0 .. e_L of padded images."""
        head, levels = self.encoder
        maps = [torch.relu(head(x))]
        for level in levels:
            maps.append(Level.run(level.down, maps[-1]))
        return maps

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """x + net(x) for images x (n, c, H, W) in [0, 1] of any H, W at least ``stride``: the same shape."""
        height, width = x.shape[-2:]
        maps = self._encoded(self._padded(x))
        d = maps[-1]
        for level, skip in zip(reversed(self.encoder[1]), reversed(maps[:-1])):
            d = Level.run(level.up, d, skip)
        return x + self.decoder(d)[..., :height, :width]

    def enlarge(self, low: torch.Tensor, factor: int) -> torch.Tensor:
        """The restoration of the bicubic enlargement by ``factor`` of small images ``low`` (n, c, h, w)."""
        if factor not in self.factors:
            raise AekitError(
                f"this run upscales by {', '.join(map(str, self.factors)) or 'no factor'}, not {factor}; "
                "give one of those"
            )
        return self.restore(F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False))

    @staticmethod
    def shrink(x: torch.Tensor, factor: int) -> torch.Tensor:
        """The bicubic low-resolution version of images x (n, c, H, W) that ``enlarge`` undoes: cropped to multiples
        of ``factor`` from the top left, then downsampled by ``factor`` with antialiasing (as MATLAB's imresize,
        which the benchmarks use)."""
        height, width = (size - size % factor for size in x.shape[-2:])
        cropped = x[..., :height, :width]
        return F.interpolate(cropped, size=(height // factor, width // factor), mode="bicubic", antialias=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck map e_L: not a code (``gives_codes`` is False)."""
        return self._encoded(self._padded(x))[-1]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise AekitError("a restoration run's bottleneck cannot be decoded alone (its skips carry the detail)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``restore``: what ``reconstruct`` gives of examples of the run's size, in any layout and type."""
        return self.restore(x)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x with its noise at ``noise_level`` (Gaussian: the top of a blind range): what the figure and metric
        show."""
        return corrupt(x, self.noise, self.noise_level)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """Each image with Gaussian noise of its own sigma, drawn uniformly over ``sigma`` (0-255 scale); or the
        masking or salt-and-pepper noise of ``noise_level``, drawn afresh."""
        if self.noise != "gaussian":
            return self.corrupt(x)
        low, high = self.sigma[0], self.sigma[-1]
        sigma = torch.empty(len(x), *(1,) * (x.dim() - 1), device=x.device).uniform_(low, high) / 255
        return x + sigma * torch.randn_like(x)

    def loss(self, x: torch.Tensor) -> Loss:
        if self.task == "denoise":
            target, output = x, self.restore(self._noisy(x))
        else:
            factor = self.factors[int(torch.randint(len(self.factors), ()))]
            low = self.shrink(x, factor)
            target, output = x[..., : low.shape[-2] * factor, : low.shape[-1] * factor], self.enlarge(low, factor)
        rec = (output - target).pow(2).flatten(1).sum(1).mean()
        return Loss(rec, {"reconstruction": rec})


@register
@dataclass(frozen=True)
class RestorationConfig(ModelConfig):
    """The restoration network: its task, the noise or the factors it learns to undo, and its size. It always learns
    the squared error of unstandardized intensities (``likelihood`` and ``standardize`` are set so)."""

    family = "red"
    label = "RED"
    model_class = Restorer
    sized_by = ("width", "levels", "blocks")

    # Not named task: the net families' --task defaults to reconstruct, and an option has one default everywhere.
    restore: str = option("denoise", "what it learns: denoise, or upscale (undo bicubic downsampling)", choices=TASKS)
    sigma: tuple[int, ...] = option(
        (25,), "denoise: the noise's standard deviation on the 0-255 scale, or low,high to learn every one between"
    )
    factors: tuple[int, ...] = option((2,), "upscale: the factors it learns to undo, e.g. 2,3,4")
    noise: str = noise_option()
    noise_level: float = noise_level_option()
    width: int = option(32, "the channels of every level")
    levels: int = option(2, "the stride-2 levels of the encoder (and the decoder's mirrored ones)")
    blocks: int = option(2, "the 3x3 convolutions per level")

    def __post_init__(self):
        # Restored images are intensities at any size: the squared error of them, unstandardized, whatever the data
        # would have chosen (--loss, --standardize).
        object.__setattr__(self, "likelihood", "gaussian")
        object.__setattr__(self, "standardize", False)
        super().__post_init__()

    def problems(self) -> list[str]:
        problems = super().problems()
        if len(self.shape) != 3:
            return [
                f"{named('model', 'red')} restores images (channels, height, width), not examples of shape "
                f"{tuple(self.shape)}; train on an image dataset"
            ]
        if self.restore not in TASKS:
            problems.append(f"unknown {named('restore', self.restore)}; use one of {', '.join(TASKS)}")
        problems += noise_problems(self.noise, self.noise_level)
        if len(self.sigma) not in (1, 2) or not 0 <= self.sigma[0] <= self.sigma[-1] <= MOST_SIGMA:
            problems.append(
                f"{named('sigma', self.sigma)} must be one level or low,high between 0 and {MOST_SIGMA}, "
                "e.g. 25 or 0,55"
            )
        if not self.factors or min(self.factors) < 2 or len(set(self.factors)) != len(self.factors):
            problems.append(
                f"{named('factors', self.factors)} must be distinct whole numbers of at least 2, e.g. 2,3,4"
            )
        if self.width < 1 or self.blocks < 1 or self.levels < 1:
            problems.append(f"{named('width')}, {named('levels')} and {named('blocks')} must be at least 1")
        elif min(self.shape[1:]) < 2**self.levels:
            problems.append(
                f"{named('levels', self.levels)} halves the image {self.levels} times, more than images of "
                f"{self.shape[1]}x{self.shape[2]} allow; use at most {max(0, min(self.shape[1:]).bit_length() - 1)}"
            )
        return problems

    def build(self) -> Restorer:
        return Restorer(self)
