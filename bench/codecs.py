"""The image codecs and measures of the rate-distortion benchmark (bench/compress.py): PNG, JPEG, WebP and AVIF
through Pillow, SSIM as scikit-image computes it (batched), and the Bjontegaard delta rate of two curves."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter

from aekit.evaluation.measures import psnr

# Pillow's format names and the qualities swept: each codec's own scale (JPEG 1-95, WebP and AVIF 0-100), dense at
# the low end, where the learned codes lie.
QUALITIES = {
    "JPEG": (1, 2, 3, 5, 8, 12, 20, 35, 50, 75, 90),
    "WEBP": (0, 2, 5, 10, 20, 35, 50, 75, 90),
    "AVIF": (0, 5, 10, 20, 35, 50, 65, 80, 90),
}
# Pillow's defaults otherwise (4:2:0 chroma for colour, AVIF speed 6), plus JPEG's optimized Huffman tables and
# WebP's slowest, smallest method: what a user saving one image would get at its smallest.
OPTIONS = {"PNG": {"optimize": True}, "JPEG": {"optimize": True}, "WEBP": {"method": 6}, "AVIF": {}}
# SSIM's settings in Wang et al. (2004), as scikit-image's structural_similarity takes them: Gaussian weights of
# sigma 1.5 cut at 3.5 sigma (an 11 x 11 window), population covariances, K1 0.01, K2 0.03.
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K = 1.5, 3.5, (0.01, 0.03)


def encoded(pixels: np.ndarray, kind: str, quality: int | None = None, options: dict | None = None) -> bytes:
    """One file of ``pixels`` (uint8, (h, w) grey or (h, w, 3) colour) in Pillow's format ``kind``, with
    :data:`OPTIONS` unless ``options`` are given ({}: Pillow's defaults)."""
    buffer = io.BytesIO()
    options = OPTIONS[kind] if options is None else options
    options = options if quality is None else {**options, "quality": quality}
    Image.fromarray(pixels).save(buffer, kind, **options)
    return buffer.getvalue()


def decoded(data: bytes, mode: str) -> np.ndarray:
    """The pixels of an image file in ``mode`` (L or RGB): WebP stores grey images as colour, so it is converted."""
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def as_pixels(images: np.ndarray) -> np.ndarray:
    """Intensities (n, channels, h, w) in [0, 1] as 8-bit pixels (n, h, w) for grey, (n, h, w, 3) for colour."""
    pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def as_intensities(pixels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`as_pixels`: (n, channels, h, w) float32 in [0, 1]."""
    pixels = pixels[..., None] if pixels.ndim == 3 else pixels
    return pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255


def one_file_each(images: np.ndarray, kind: str, quality: int | None) -> tuple[float, np.ndarray, float, float]:
    """Each image saved as its own file: the mean bytes of a file, the decoded images, and images per second
    encoding and decoding (one thread, Pillow's)."""
    pixels = as_pixels(images)
    mode = "L" if pixels.ndim == 3 else "RGB"
    start = time.perf_counter()
    files = [encoded(p, kind, quality) for p in pixels]
    middle = time.perf_counter()
    back = np.stack([decoded(f, mode) for f in files])
    end = time.perf_counter()
    return (
        sum(map(len, files)) / len(files),
        as_intensities(back),
        len(files) / (middle - start),
        len(files) / (end - middle),
    )


def one_file(whole: np.ndarray, kind: str, quality: int | None) -> tuple[int, np.ndarray]:
    """One image (channels, h, w) saved as one file: its bytes and the decoded image."""
    pixels = as_pixels(whole[None])[0]
    data = encoded(pixels, kind, quality)
    return len(data), as_intensities(decoded(data, "L" if pixels.ndim == 2 else "RGB")[None])[0]


def ssim(output: np.ndarray, clean: np.ndarray) -> float:
    """The mean over examples of each image's SSIM (intensities (n, channels, h, w) in [0, 1], data range 1), equal
    to scikit-image's ``structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=0)`` of each pair, but filtering all images at once."""
    x, y = np.asarray(output, np.float64), np.asarray(clean, np.float64)

    def blur(values):
        return gaussian_filter(values, sigma=(0, 0, SSIM_SIGMA, SSIM_SIGMA), truncate=SSIM_TRUNCATE, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # the window's half width: scikit-image leaves out that border
    return float(s[:, :, pad:-pad, pad:-pad].mean(axis=(1, 2, 3)).mean())


def quality_of(output: np.ndarray, clean: np.ndarray) -> dict:
    """PSNR (dB, the mean over images of each one's), SSIM and the squared error per image (the sum over an image's
    values in [0, 1]) of ``output`` against ``clean``."""
    error = ((np.asarray(output, np.float64) - clean) ** 2).reshape(len(clean), -1).sum(1).mean()
    return {"psnr_db": psnr(output, clean), "ssim": ssim(output, clean), "sse_per_image": float(error)}


def pareto(rates: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve no other point beats (fewer or as many bytes for a higher quality), by rising rate: a
    codec's setting that costs more bytes for less quality is one nobody would choose."""
    order = np.lexsort((-quality, rates))
    kept, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            kept.append(i)
            best = quality[i]
    return rates[kept], quality[kept]


def _fronts(rates, quality, ref_rates, ref_quality) -> list[tuple[np.ndarray, np.ndarray]]:
    """Both curves' unbeaten points (:func:`pareto`), as float arrays."""
    pairs = ((rates, quality), (ref_rates, ref_quality))
    return [pareto(np.asarray(r, float), np.asarray(q, float)) for r, q in pairs]


def overlap(rates, quality, ref_rates, ref_quality) -> tuple[float, float] | None:
    """The quality range two curves both reach (their beaten points left out: :func:`pareto`); None where there is
    none or a curve has fewer than two points."""
    curves = _fronts(rates, quality, ref_rates, ref_quality)
    low, high = max(q.min() for _, q in curves), min(q.max() for _, q in curves)
    return (low, high) if min(len(q) for _, q in curves) >= 2 and low < high else None


def bd_rate(rates, quality, ref_rates, ref_quality) -> float | None:
    """Bjontegaard's delta rate (VCEG-M33) of a curve against a reference, in percent: the mean over the quality
    range both cover (:func:`overlap`) of the difference of their log rates, each curve's log rate a piecewise cubic
    (PCHIP) of the quality through its points; -50 means half the bytes at equal quality. None where there is no
    such range."""
    span = overlap(rates, quality, ref_rates, ref_quality)
    if span is None:
        return None
    low, high = span
    areas = [
        PchipInterpolator(q, np.log(r)).antiderivative() for r, q in _fronts(rates, quality, ref_rates, ref_quality)
    ]
    mean_difference = ((areas[0](high) - areas[0](low)) - (areas[1](high) - areas[1](low))) / (high - low)
    return float((np.exp(mean_difference) - 1) * 100)


def rate_at(rates: np.ndarray, quality: np.ndarray, target: float) -> float | None:
    """The bytes a curve needs for ``target`` quality, interpolated as :func:`bd_rate` does (log rate a PCHIP of the
    quality); None outside the qualities it reaches."""
    r, q = pareto(np.asarray(rates, float), np.asarray(quality, float))
    if len(q) < 2 or not q.min() <= target <= q.max():
        return None
    return float(np.exp(PchipInterpolator(q, np.log(r))(target)))
