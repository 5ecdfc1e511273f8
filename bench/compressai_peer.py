"""CompressAI's factorized-prior model (Balle et al. 2017; the zoo's ``bmshj2018-factorized``) as the learned peer of
the rate-distortion benchmark (bench/compress.py), trained from scratch on the benchmark's own training images and
measured by the bytes of its own ``compress()``. CompressAI is optional: :func:`missing` says why it cannot be used.

The architecture is ``compressai.models.FactorizedPrior(N, M)``: four 5 x 5 stride-2 convolutions with GDN, the
entropy bottleneck, and the mirror; the zoo's model for 3 channels has N, M = 128, 192 (its lower qualities). Grey
images (MNIST) replace its first and last layers by ones of 1 channel. Images are padded with zeros to a multiple of
16 on each side (MNIST's 28 x 28 to 32 x 32, 2 pixels all round) and the output cut back, the loss and the measures
seeing the original pixels only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# Bytes a stored image's string is prefixed with (its length, a LEB128 varint), and the bytes of the latent map's
# shape (two uint16), once a file: one file of all the images needs both to be read back.
SHAPE_BYTES = 4


def missing() -> str | None:
    """None where CompressAI imports, else what went wrong."""
    try:
        import compressai.models  # noqa: F401
    except (
        Exception
    ) as error:  # an install can fail in many ways (a missing wheel, a torchvision built for another torch)
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def factorized_prior(channels: int, n: int, m: int) -> torch.nn.Module:
    """``FactorizedPrior(n, m)`` for images of ``channels`` channels."""
    from compressai.models import FactorizedPrior
    from compressai.models.utils import conv, deconv

    model = FactorizedPrior(n, m)
    if channels != 3:
        model.g_a[0], model.g_s[-1] = conv(channels, n), deconv(n, channels)
    return model


def padding(height: int, width: int, multiple: int = 16) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) to the next ``multiple`` (16: the four stride-2 layers of the factorized
    prior; 64 for the hyperprior's two more), split evenly, as CompressAI's own evaluation pads."""
    across, down = -width % multiple, -height % multiple
    return across // 2, across - across // 2, down // 2, down - down // 2


def padded(x: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Images (n, c, h, w) padded with zeros as :func:`padding` says."""
    return F.pad(x, padding(*x.shape[-2:], multiple))


def unpadded(y: torch.Tensor, height: int, width: int, multiple: int = 16) -> torch.Tensor:
    """The ``height`` x ``width`` images that :func:`padded` padded, cut back out of ``y``."""
    left, _, top, _ = padding(height, width, multiple)
    return y[..., top : top + height, left : left + width]


def _batch(images: np.ndarray, rows) -> torch.Tensor:
    """Rows of images (8-bit pixels or intensities in [0, 1]) as float32 intensities."""
    x = torch.from_numpy(np.asarray(images[rows]))
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def train(
    model: torch.nn.Module,
    images: np.ndarray,
    rate_lambda: float,
    epochs: int,
    batch_size: int,
    seed: int,
    say: Callable[[str], None],
) -> int:
    """Train on distortion + ``rate_lambda`` x rate, per image: the sum of squared differences of the intensities in
    [0, 1], and the bits of the latent under the entropy bottleneck (uniform noise in training). Adam 1e-3 on a cosine
    schedule over the steps, as aekit's benchmark runs train; gradients clipped to norm 1 and the bottleneck's
    quantiles fitted by their own Adam on ``aux_loss()``, as CompressAI's example training script does. Returns the
    number of steps (``epochs`` x ceil(n / batch_size), the last batch of an epoch smaller)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    aux = [p for name, p in model.named_parameters() if name.endswith("quantiles")]
    main = [p for name, p in model.named_parameters() if not name.endswith("quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, 1e-3), torch.optim.Adam(aux, 1e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator).numpy()
        for start in range(0, len(images), batch_size):
            x = _batch(images, np.sort(order[start : start + batch_size]))
            out = model(padded(x))
            distortion = (unpadded(out["x_hat"], *x.shape[-2:]) - x).pow(2).flatten(1).sum(1).mean()
            rate = -torch.log2(out["likelihoods"]["y"]).flatten(1).sum(1).mean()
            optimizer.zero_grad()
            aux_optimizer.zero_grad()
            (distortion + rate_lambda * rate).backward()
            torch.nn.utils.clip_grad_norm_(main, 1.0)
            optimizer.step()
            schedule.step()
            model.aux_loss().backward()
            aux_optimizer.step()
        say(f"  compressai lambda {rate_lambda} epoch {epoch + 1}: {distortion.item():.3f} + {rate.item():.1f} bits")
    return steps


def varint_bytes(n: int) -> int:
    return max(1, math.ceil(n.bit_length() / 7))


@torch.no_grad()
def measure(model: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> tuple[dict, np.ndarray]:
    """Compress every image with the model's entropy coder (CompressAI's rANS, one string an image) and decompress it:
    the bytes per image of one file of them all (each string with its length, and the latent's shape once), the
    model's own estimate of them (-log2 of the bottleneck's likelihoods / 8), images per second each way, and the
    decoded images (in [0, 1], as CompressAI clamps them)."""
    model.eval()
    model.update(force=True)
    strings, decoded, estimate, seconds = [], [], 0.0, [0.0, 0.0]
    height, width = images.shape[-2:]
    for start in range(0, len(images), batch_size):
        x = padded(_batch(images, slice(start, start + batch_size)))
        begin = time.perf_counter()
        stored = model.compress(x)
        middle = time.perf_counter()
        back = model.decompress(stored["strings"], stored["shape"])["x_hat"]
        seconds[0], seconds[1] = seconds[0] + middle - begin, seconds[1] + time.perf_counter() - middle
        strings += stored["strings"][0]
        decoded.append(unpadded(back, height, width).numpy())
        estimate += -torch.log2(model(x)["likelihoods"]["y"]).sum().item() / 8
    total = SHAPE_BYTES + sum(len(s) + varint_bytes(len(s)) for s in strings)
    n = len(images)
    row = {
        "bytes_per_image": total / n,
        "model_bytes_per_image": estimate / n,
        "compress_images_per_s": n / seconds[0],
        "decompress_images_per_s": n / seconds[1],
    }
    return row, np.concatenate(decoded)
