"""Models on data a batch at a time, as the trainer, evaluation and the uses share it: :func:`batches` (a chunk of
rows at a time, as the model takes them), :func:`evaluating` (evaluation mode for the block, the model's own mode
after it), :func:`in_batches` (a method of every example, as one numpy array) and :func:`codes`."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from aekit.models.base import device_of, float_batch, rows_tensor


def batches(
    x: np.ndarray | torch.Tensor,
    size: int,
    model: torch.nn.Module,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[torch.Tensor]:
    """``x`` (an array, memory-mapped or not, or a tensor) ``size`` rows at a time as ``model`` takes them: on its
    device, in its floating type; uint8 8-bit intensities travel as they are and are divided by 255 there. ``prepare``
    is applied to each block of an array's rows first (e.g. a scikit-learn scaler's transform), so that no whole
    copy of x is made."""
    device = device_of(model)
    dtype = next(
        (t.dtype for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()),
        torch.float32,
    )
    for start in range(0, len(x), size):
        block = x[start : start + size]
        if prepare is not None:
            block = prepare(block)
        if not isinstance(block, torch.Tensor):
            block = rows_tensor(block)
        yield float_batch(block.to(device)).to(dtype)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in evaluation mode for the block (no dropout, no fresh binarization), then every submodule back in
    the mode it was in, whether the block ends or raises."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def filled(blocks: Iterable[np.ndarray], n: int) -> np.ndarray:
    """The ``n`` rows that ``blocks`` hold, in order, in one array made when the first block comes. Blocks kept to
    the end and joined there would each pin heap memory between the batches' freed temporaries (glibc's malloc), and
    the process would grow with the number of batches."""
    out, done = None, 0
    for block in blocks:
        if out is None:
            out = np.empty((n, *block.shape[1:]), block.dtype)
        out[done : done + len(block)] = block
        done += len(block)
    if out is None:
        raise ValueError("no examples to compute on")
    return out


@torch.no_grad()
def in_batches(model: torch.nn.Module, method: str, x: np.ndarray, batch_size: int = 1024, **options) -> np.ndarray:
    """``model.method`` (encode, decode, reconstruct) of every example, ``batch_size`` at a time on the model's
    device in evaluation mode (given the method's ``options``), as a numpy array."""
    function = getattr(model, method)
    with evaluating(model):
        return filled((function(batch, **options).cpu().numpy() for batch in batches(x, batch_size, model)), len(x))


def codes(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The code of each example (the posterior mean for the VAE), as a numpy array (n, values): a code map
    flattened."""
    return in_batches(model, "encode", x, batch_size).reshape(len(x), -1)
