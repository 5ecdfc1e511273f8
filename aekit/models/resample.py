"""Images resampled by a whole factor, numpy in, numpy out: :func:`downsample` is what an upscaler's encoder sees of
a full-size image (its first layer averages the same f x f blocks), :func:`upsample` the interpolations it is
measured against and the uses enlarge with. Beside the models, not in :mod:`aekit.data`, which loads no torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Images (n, channels, height, width) averaged over factor x factor pixel blocks: what an upscaler's encoder
    sees of a full-size image."""
    return F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(x)), factor).numpy()


def upsample(x: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """The baselines: images enlarged ``factor`` times by ``nearest`` or ``bicubic`` interpolation (clipped to
    [0, 1])."""
    big = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(x)),
        scale_factor=factor,
        mode=mode,
        **({} if mode == "nearest" else {"align_corners": False}),
    )
    return big.clamp(0, 1).numpy()
