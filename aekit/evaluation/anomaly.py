"""Anomaly scores: how badly a trained model explains each example, in nats per example; higher is more anomalous.

A model trained on normal data explains it well and the rest badly, so its negative log-likelihood of an example is
a score of how unusual the example is. Every score is a -log of a proper density (normalising constant included) of
the example in the data's own units, so the scores of one model are comparable across examples and inputs:

- ``reconstruction_nll`` (every family): -log p(x | decoder(encoder(x))), the likelihood of x given its own code
  (the VAE's code is its posterior mean). Under the Bernoulli likelihood it is the cross-entropy
  -sum x log m + (1 - x) log(1 - m), m the decoder's mean; under the Gaussian it is
  sum (x' - m)^2 + (D/2) log(pi), a Gaussian of variance 1/2 per element around the reconstruction m of the
  standardized x' = (x - center) / scale, plus sum log(scale) where the model standardizes (the change of variables
  back to x's units: the density of x is that of x' divided by prod(scale)). PCA is the Gaussian case.
- ``neg_elbo`` (VAE): -(1/k) sum_s log w_s, w_s = p(x|z_s) p(z_s) / q(z_s|x), z_s ~ q(z|x): the negative ELBO, an
  upper bound on -log p(x), averaged over k posterior draws.
- ``nll_is_{k}`` (VAE): -log (1/k) sum_s w_s over the same draws: the importance-weighted estimate of -log p(x)
  (Burda et al. 2015), tighter than the ELBO and exact as k grows.

The VAE's scores give every example the same k standard normal draws (z_s = mu(x) + sigma(x) eps_s), so an
example's score depends on it alone, not on the examples it is scored with. Examples go through the model a batch at
a time (:func:`aekit.models.inference.batches`; memory bounded whatever their number). :func:`roc` and
:func:`average_precision` measure a score against known anomalies, those of :func:`measured_examples`.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from aekit.data.files import check_intensities
from aekit.data.layout import as_float, to_shape
from aekit.errors import AekitError, DataError
from aekit.evaluation.measures import importance_weighted_nll
from aekit.models import Bernoulli
from aekit.models.inference import batches, evaluating, filled

RECONSTRUCTION, ELBO, NLL = "reconstruction_nll", "neg_elbo", "nll_is"
SCORES = (RECONSTRUCTION, ELBO, NLL)
# Posterior draws per example for the VAE's scores where none are asked for.
SAMPLES = 100


def score_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The scores ``model`` has: the reconstruction NLL, and for a model with a variational bound (a VAE) the
    negative ELBO and the NLL estimate."""
    return SCORES if model.variational else (RECONSTRUCTION,)


def score_key(score: str, samples: int = SAMPLES) -> str:
    """The name a score's values go by: ``nll_is`` with k samples is ``nll_is_{k}``, the others their own."""
    return f"{NLL}_{samples}" if score == NLL else score


def check_score(model: torch.nn.Module, score: str, samples: int = SAMPLES) -> None:
    """Refuse a score ``model`` does not have, or fewer than one posterior draw, naming the fix."""
    if not model.gives_codes:
        raise AekitError("this run gives no codes to score anomalies with (its model restores images); use another run")
    if score not in score_names(model):
        extra = "" if model.variational else f" ({ELBO} and {NLL} need a VAE)"
        raise AekitError(
            f"unknown anomaly score {score!r} for a {type(model).__name__}{extra}; use one of "
            f"{', '.join(score_names(model))}"
        )
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise AekitError(f"the number of posterior draws per example ({samples!r}) must be a whole number >= 1")


@torch.no_grad()
def reconstruction_nll(
    model: torch.nn.Module, x, batch_size: int = 1024, prepare: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """-log p(x | decoder(encoder(x))) of each example of ``x`` in nats (float64), in the data's units (see the
    module's docstring). ``prepare`` is applied to each block of rows first (see
    :func:`aekit.models.inference.batches`)."""
    jacobian = float(model.standardize.log_scale_sum())

    def scores():
        for batch in batches(x, batch_size, model, prepare):
            code = model.encode(batch)
            log_p = model.likelihood.log_prob(model.decoder_output(code), model.standardize(batch))
            yield (jacobian - log_p.double()).cpu().numpy()

    with evaluating(model):
        return filled(scores(), len(x))


@torch.no_grad()
def errors_and_codes(
    model: torch.nn.Module, x, batch_size: int = 1024, prepare: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each example's reconstruction error and code (float64): the error is the sum of squared differences between
    the example and the likelihood's mean for its code, in the networks' units (standardized values; intensities
    under a Bernoulli model); the code is the encoder's (the VAE's posterior mean). ``prepare`` as for
    :func:`reconstruction_nll`."""

    def blocks():
        for batch in batches(x, batch_size, model, prepare):
            code = model.encode(batch)
            mean = model.likelihood.mean(model.decoder_output(code))
            error = (mean - model.standardize(batch)).pow(2).flatten(1).sum(1)
            yield torch.cat([error[:, None], code.flatten(1)], 1).double().cpu().numpy()

    with evaluating(model):
        both = filled(blocks(), len(x))
    return both[:, 0], both[:, 1:]


def anomaly_scores(
    model: torch.nn.Module,
    x,
    score: str = RECONSTRUCTION,
    *,
    samples: int = SAMPLES,
    seed: int = 0,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    source: str = "x",
) -> np.ndarray:
    """The anomaly score ``score`` (:data:`SCORES`) of each example of ``x`` (an array, memory-mapped or not, or
    anything sliced by rows), in nats, higher for what is more anomalous; ``samples`` = k posterior draws per example
    for the VAE's scores, drawn from a generator seeded with ``seed``.

    ``x`` is checked as the apps check their input, a block of rows at a time: in any layout of the model's example
    shape (:func:`aekit.data.layout.to_shape`), numbers (uint8: 8-bit intensities), neither NaN nor infinite, and in
    [0, 1] for a model of intensities (the cross-entropy); each problem is a one-line DataError naming ``source``.
    ``prepare`` is applied to each checked block (see :func:`aekit.models.inference.batches`)."""
    check_score(model, score, samples)
    x = x if hasattr(x, "shape") else np.asarray(x)
    checked = _checked(model, x, source, prepare)
    if score == RECONSTRUCTION:
        return reconstruction_nll(model, x, prepare=checked)
    estimate = importance_weighted_nll(model, x, samples, seed=seed, same_draws=True, prepare=checked)
    return estimate.neg_elbo if score == ELBO else estimate.nll


def _checked(
    model: torch.nn.Module, x, source: str, prepare: Callable[[np.ndarray], np.ndarray] | None
) -> Callable[[np.ndarray], np.ndarray]:
    """The function that makes a block of rows of ``x`` what ``model`` takes, checked (see :func:`anomaly_scores`),
    then ``prepare``d; the layout of the whole of ``x`` is checked first, before any work."""
    shape, what = model.example_shape, "the model takes"
    if len(x) == 0:
        raise DataError(f"{source} holds no examples; give at least one")
    if shape is not None:
        to_shape(np.broadcast_to(np.float32(0), x.shape), shape, source, what)
    # The float type the model computes in: a float64 copy (the scikit-learn estimators') keeps float64 input.
    tensors = itertools.chain(model.parameters(), model.buffers())
    dtype = np.float64 if any(t.dtype == torch.float64 for t in tensors) else np.float32
    bernoulli = model.likelihood is Bernoulli

    def check(block) -> np.ndarray:
        if isinstance(block, torch.Tensor):
            block = block.detach().cpu().numpy()
        values = as_float(block, source, dtype)
        if shape is not None:
            values, _ = to_shape(values, shape, source, what)
        if bernoulli:
            check_intensities(values, source)
        return values if prepare is None else prepare(values)

    return check


def anomalous(labels: np.ndarray, normal_classes) -> np.ndarray:
    """Whether each example is an anomaly: its label is none of ``normal_classes``."""
    return ~np.isin(np.asarray(labels), np.asarray(normal_classes))


class ROC(NamedTuple):
    """A receiver operating characteristic: the share of anomalies flagged (``tpr``) against the share of normal
    examples flagged (``fpr``) as the threshold on the score falls, and the area under it (``auroc``: the chance
    that a random anomaly scores above a random normal example, ties counting half)."""

    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float


def roc(scores: np.ndarray, is_anomaly: np.ndarray) -> ROC:
    """The ROC of anomaly ``scores`` (higher: more anomalous) against the truth ``is_anomaly``; both kinds of example
    must be present."""
    from sklearn.metrics import roc_auc_score, roc_curve

    is_anomaly = np.asarray(is_anomaly, bool)
    if is_anomaly.all() or not is_anomaly.any():
        raise AekitError("an ROC needs both normal and anomalous examples; these are all of one kind")
    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    return ROC(fpr, tpr, float(roc_auc_score(is_anomaly, scores)))


def average_precision(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """The area under the precision-recall curve of anomaly ``scores`` against the truth ``is_anomaly`` (scikit-learn's
    average precision, the anomalies the positives): unlike the AUROC it falls with the share of anomalies, which is
    its value for scores that tell nothing."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(is_anomaly, bool), scores))


class Measured(NamedTuple):
    """The examples whose anomaly scores are measured: arrays of examples (``parts``), scored in turn and their
    scores joined, and whether each example is an anomaly (``truth``)."""

    parts: tuple
    truth: np.ndarray


def measured_examples(dataset, normal_classes: tuple[int, ...] | None) -> Measured | None:
    """What the anomaly scores of a model trained on ``dataset`` are measured on: for one-class training
    (``normal_classes``) the test split, its examples of the other classes the anomalies; else, where the labels mark
    anomalies (``dataset.anomaly_labels``, never used to fit), every example of both splits, as ADBench measures an
    unsupervised detector, those labelled 1 the anomalies; None where there is nothing to measure against."""
    if dataset.y_test is None:
        return None
    if normal_classes is not None:
        return Measured((dataset.x_test,), anomalous(dataset.y_test, normal_classes))
    if dataset.anomaly_labels:
        return Measured((dataset.x_train, dataset.x_test), np.concatenate([dataset.y_train, dataset.y_test]) == 1)
    return None


def measured_scores(model: torch.nn.Module, measured: Measured, score: str, samples: int = SAMPLES) -> np.ndarray:
    """The anomaly score ``score`` of each example of ``measured``, in the order of its truth."""
    return np.concatenate([anomaly_scores(model, x, score, samples=samples) for x in measured.parts])
