"""Kept for one release, then removed: the names of the former ``aekit.evaluate`` module, which live now in
:mod:`aekit.evaluation` (``evaluate``), :mod:`aekit.evaluation.measures` (the measures), :mod:`aekit.models.inference`
(the batching helpers) and :mod:`aekit.models.resample` (``downsample``, ``upsample``)."""

import sys
import types

from aekit.evaluation import evaluate
from aekit.evaluation.measures import (
    LikelihoodEstimate,
    codebook_perplexity,
    importance_weighted_nll,
    negative_elbo,
    probe_accuracies,
    psnr,
    reconstruction_metrics,
    upscaling_psnr,
)
from aekit.models.inference import batches, codes, evaluating, filled, in_batches
from aekit.models.resample import downsample, upsample

__all__ = [
    "LikelihoodEstimate",
    "batches",
    "codebook_perplexity",
    "codes",
    "downsample",
    "evaluate",
    "evaluating",
    "filled",
    "importance_weighted_nll",
    "in_batches",
    "negative_elbo",
    "probe_accuracies",
    "psnr",
    "reconstruction_metrics",
    "upsample",
    "upscaling_psnr",
]


class _CallableModule(types.ModuleType):
    """Importing this module (``import aekit.evaluate``, ``from aekit.evaluate import psnr``) binds it on the package
    as ``aekit.evaluate``, over the function of that name that ``aekit`` exports (:func:`aekit.evaluation.evaluate`).
    Called, the module is that function, so ``aekit.evaluate(model, data)`` works whichever of the two the name
    holds, and ``aekit.evaluate.psnr`` too once the module is imported. It goes with the module."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
