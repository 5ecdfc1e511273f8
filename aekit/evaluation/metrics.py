"""The metric registry: every number a run reports, declared once, from which evaluation, ``compare``, the demo
table and the HTML report all draw.

A :class:`Metric` names its key in metrics.json, what it measures (with its unit), how it is formatted, whether a
larger value is better, the function that computes it (None for what training records and evaluation keeps) and
which models and data it applies to (asked of the model's capabilities, never of its class). The registry loads
without torch (the HTML report reads it): a metric's function imports what it computes with
(:mod:`aekit.evaluation.measures`, :mod:`aekit.evaluation.anomaly`) when it is first called; those modules never
import this one, so the imports stay one way. A metric registered
anywhere else (a new model family's module, say) appears everywhere too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Subject(NamedTuple):
    """What the metrics are computed on: a model, its data (binarized where the model was trained so), the
    number of importance samples asked for the likelihood estimate (None: none) and the classes the model was trained
    on as the normal ones (``--normal-class``; None: all)."""

    model: Any
    dataset: Any
    nll_samples: int | None = None
    normal_classes: tuple[int, ...] | None = None


def _always(subject: Subject) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    """One metric. ``name`` is its key; "{k}" in it stands for a whole number (``nll_is_{k}``: one key per k).
    ``compute`` maps a :class:`Subject` to a dict holding this metric's key (and maybe others: metrics computed
    together share the function, which is called once); ``applies`` says whether it does for a subject.
    ``higher_is_better`` is None for a number that is not ranked."""

    name: str
    description: str
    fmt: str
    higher_is_better: bool | None
    compute: Callable[[Subject], dict[str, float]] | None = None
    applies: Callable[[Subject], bool] = _always

    def matches(self, key: str) -> bool:
        return _pattern(self.name).fullmatch(key) is not None

    def describe(self, key: str) -> str:
        """The description (with k filled in from ``key``) and which way is better."""
        k = _pattern(self.name).fullmatch(key).groups()
        text = self.description.replace("{k}", k[0]) if k else self.description
        if self.higher_is_better is None:
            return text
        return f"{text}; {'higher' if self.higher_is_better else 'lower'} is better"


@functools.cache
def _pattern(name: str) -> re.Pattern:
    """The keys of the metric ``name``: itself, or with "{k}" any whole number."""
    return re.compile(re.escape(name).replace(re.escape("{k}"), r"(\d+)"))


# Name to metric, in the order tables show them.
REGISTRY: dict[str, Metric] = {}


def register(*metrics: Metric) -> None:
    """Add ``metrics`` to the registry, after those there; a name taken already is a programming error."""
    for metric in metrics:
        if metric.name in REGISTRY:
            raise ValueError(f"a metric named {metric.name!r} is registered already")
        REGISTRY[metric.name] = metric


def lookup(key: str) -> Metric | None:
    """The metric whose key ``key`` is (None for a key that is no metric's, such as "model")."""
    return next((metric for metric in REGISTRY.values() if metric.matches(key)), None)


def columns(rows: Iterable[dict]) -> list[str]:
    """The metric keys that at least one of ``rows`` has a value for, in registry order (and by k within one
    metric): the metric columns of a table of those rows."""
    present = {key for row in rows for key, value in row.items() if value is not None}
    return [
        key
        for metric in REGISTRY.values()
        for key in sorted(present, key=lambda key: (len(key), key))  # nll_is_5 before nll_is_10
        if lookup(key) is metric
    ]


def formatted(key: str, value) -> str:
    """``value`` as its metric's format writes it ("-" for None; ``str`` for a key that is no metric's)."""
    if value is None:
        return "-"
    metric = lookup(key)
    if metric is None or isinstance(value, (str, bool)):
        return str(value)
    return format(value, metric.fmt)


def legend(keys: Iterable[str]) -> str:
    """A Markdown list saying what each of the metric ``keys`` is."""
    return "\n".join(f"- `{key}`: {lookup(key).describe(key)}" for key in keys) + "\n"


def kept(previous: dict, fresh: dict) -> dict:
    """``fresh`` metrics, then the ``previous`` ones (of a run's metrics.json) that an evaluation does not
    recompute: what training recorded (time, epochs, size) and estimates asked for earlier (``nll_is_{k}``)."""
    return {**fresh, **{k: v for k, v in previous.items() if k not in fresh and lookup(k) is not None}}


# --- aekit's metrics, in table order: how each group is computed and to what it applies ----------------------------
# The imports inside the functions wait for a computation: they load torch.


def _reconstruction(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import reconstruction_metrics

    return reconstruction_metrics(s.model, s.dataset.x_test)


def _upscaling(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import upscaling_psnr

    return upscaling_psnr(s.model, s.dataset.x_test)


def _denoising(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import denoising_psnr

    return denoising_psnr(s.model, s.dataset.x_test)


def _enlarging(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import enlarging_psnr

    return enlarging_psnr(s.model, s.dataset.x_test)


def _elbo(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import negative_elbo

    return {"neg_elbo": negative_elbo(s.model, s.dataset.x_test)}


def _likelihood(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import importance_weighted_nll

    estimate = importance_weighted_nll(s.model, s.dataset.x_test, s.nll_samples)
    return {f"nll_is_{s.nll_samples}": float(estimate.nll.mean())}


# Posterior draws per test example for the AUROC of the VAE's negative ELBO.
ELBO_DRAWS = 10


def _anomaly_detection(s: Subject) -> dict[str, float]:
    from aekit.evaluation.anomaly import (
        ELBO,
        NLL,
        RECONSTRUCTION,
        average_precision,
        measured_examples,
        measured_scores,
        roc,
    )

    measured = measured_examples(s.dataset, s.normal_classes)
    wanted = {RECONSTRUCTION: (RECONSTRUCTION, 1)}
    if _variational(s):
        wanted[ELBO] = (ELBO, ELBO_DRAWS)
        if s.nll_samples is not None:
            wanted[f"{NLL}_{s.nll_samples}"] = (NLL, s.nll_samples)
    metrics = {}
    for key, (score, k) in wanted.items():
        scores = measured_scores(s.model, measured, score, k)
        metrics[f"auroc_{key}"] = roc(scores, measured.truth).auroc
        metrics[f"auprc_{key}"] = average_precision(scores, measured.truth)
    return metrics


def _codebook(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import codebook_perplexity

    return {"codebook_perplexity": codebook_perplexity(s.model, s.dataset.x_test)}


def _rate(s: Subject) -> dict[str, float]:
    from aekit.models.inference import in_batches

    bits = float(in_batches(s.model, "rate_bits", s.dataset.x_test).mean())
    shape = s.dataset.shape
    return {"rate_bits_per_example": bits, **({"bits_per_pixel": bits / (shape[1] * shape[2])} if _images(s) else {})}


# The most training examples the probes are fitted on (a seeded sample of them where there are more).
PROBE_EXAMPLES = 60_000


def _probes(s: Subject) -> dict[str, float]:
    from aekit.evaluation.measures import probe_accuracies

    return probe_accuracies(s.model, s.dataset, PROBE_EXAMPLES, NEIGHBOURS)


def _bernoulli(s: Subject) -> bool:
    return s.model.likelihood.name == "bernoulli"


def _variational(s: Subject) -> bool:
    return s.model.variational


def _entropy_coded(s: Subject) -> bool:
    return s.model.entropy_model is not None


def _images(s: Subject) -> bool:
    return len(s.dataset.shape) == 3


def _upscaler(s: Subject) -> bool:
    return bool(s.model.upscale_factor)


def _denoiser(s: Subject) -> bool:
    """Whether the model undoes Gaussian noise on images."""
    return s.model.noise == "gaussian" and _images(s)


def _enlarger(s: Subject) -> bool:
    return bool(s.model.factors)


# The neighbours that vote in the k-nearest-neighbour probe.
NEIGHBOURS = 5


def _probed(s: Subject) -> bool:
    """Whether the probes can be fitted on the training codes: labels of two classes or more, and as many examples
    as the neighbours that vote."""
    y = s.dataset.y_train
    return (
        s.model.gives_codes
        and y is not None
        and s.dataset.y_test is not None
        and len(y) >= NEIGHBOURS
        and len(set(y.tolist())) >= 2
    )


def _anomalies_known(s: Subject) -> bool:
    """Whether the anomaly scores can be measured against known anomalies: the test split's other classes after
    one-class training (``--normal-class``), or a table's anomaly labels (see
    :func:`aekit.evaluation.anomaly.measured_examples`)."""
    from aekit.evaluation.anomaly import measured_examples

    return s.model.gives_codes and measured_examples(s.dataset, s.normal_classes) is not None


register(
    Metric("sse_per_example", "sum of squared errors per test example", ".3f", False, _reconstruction),
    Metric("mse", "squared error per element", ".5f", False, _reconstruction),
    Metric(
        "r2",
        "mean over features of the coefficient of determination 1 - SSE/SST (real-valued data)",
        ".4f",
        True,
        _reconstruction,
        lambda s: not _bernoulli(s),
    ),
    Metric(
        "bce_per_example",
        "cross-entropy per example, nats (Bernoulli models)",
        ".2f",
        False,
        _reconstruction,
        _bernoulli,
    ),
    Metric("psnr_db", "PSNR of the upscaled test images, dB (upscalers)", ".2f", True, _upscaling, _upscaler),
    Metric("psnr_bicubic_db", "PSNR of their bicubic enlargement, dB", ".2f", True, _upscaling, _upscaler),
    Metric("psnr_nearest_db", "PSNR of their nearest-neighbour enlargement, dB", ".2f", True, _upscaling, _upscaler),
    Metric(
        "psnr_denoised_db",
        "PSNR of the test images with the model's Gaussian noise (one seeded draw, the top of a blind range) once "
        "denoised, dB (images; denoising models)",
        ".2f",
        True,
        _denoising,
        _denoiser,
    ),
    Metric("psnr_noisy_db", "PSNR of those noisy images, dB", ".2f", True, _denoising, _denoiser),
    Metric(
        "psnr_x{k}_db",
        "PSNR of the test images restored from their bicubic downsampling by {k}, dB (red)",
        ".2f",
        True,
        _enlarging,
        _enlarger,
    ),
    Metric("psnr_bicubic_x{k}_db", "PSNR of their bicubic enlargement, dB", ".2f", True, _enlarging, _enlarger),
    Metric("neg_elbo", "negative ELBO per example, nats (VAE)", ".2f", False, _elbo, _variational),
    Metric(
        "nll_is_{k}",
        "importance-weighted NLL estimate per example with {k} samples, nats (VAE)",
        ".2f",
        False,
        _likelihood,
        lambda s: _variational(s) and s.nll_samples is not None,
    ),
    Metric(
        "codebook_perplexity",
        "exp of the entropy of the test codes' codebook entries: how many are in use (codebook models)",
        ".1f",
        True,
        _codebook,
        lambda s: s.model.codebook_size is not None,
    ),
    Metric(
        "rate_bits_per_example",
        "bits per test example of the rounded code under the model's learned prior, -log2 p(code): what the entropy "
        "coder of `aekit compress` spends, headers aside (models with an entropy model)",
        ".2f",
        False,
        _rate,
        _entropy_coded,
    ),
    Metric(
        "bits_per_pixel",
        "the same per pixel (height x width) of the test images",
        ".4f",
        False,
        _rate,
        lambda s: _entropy_coded(s) and _images(s),
    ),
    Metric(
        "auroc_reconstruction_nll",
        "area under the ROC curve of the reconstruction NLL telling the anomalies from the normal examples: the test "
        "examples of the classes other than those trained on (runs with --normal-class), or every row labelled 1 from "
        "every row labelled 0 (a table's anomaly labels, which training does not use)",
        ".4f",
        True,
        _anomaly_detection,
        _anomalies_known,
    ),
    Metric(
        "auprc_reconstruction_nll",
        "area under the precision-recall curve (average precision) of the same, the anomalies the positives: its "
        "value for scores that tell nothing is the share of anomalies",
        ".4f",
        True,
        _anomaly_detection,
        _anomalies_known,
    ),
    Metric(
        "auroc_neg_elbo",
        f"the AUROC of the negative ELBO ({ELBO_DRAWS} posterior draws per example; VAE runs with known anomalies)",
        ".4f",
        True,
        _anomaly_detection,
        lambda s: _anomalies_known(s) and _variational(s),
    ),
    Metric(
        "auprc_neg_elbo",
        "its AUPRC",
        ".4f",
        True,
        _anomaly_detection,
        lambda s: _anomalies_known(s) and _variational(s),
    ),
    Metric(
        "auroc_nll_is_{k}",
        "the AUROC of the importance-weighted NLL estimate with {k} samples (VAE runs with known anomalies)",
        ".4f",
        True,
        _anomaly_detection,
        lambda s: _anomalies_known(s) and _variational(s) and s.nll_samples is not None,
    ),
    Metric(
        "auprc_nll_is_{k}",
        "its AUPRC",
        ".4f",
        True,
        _anomaly_detection,
        lambda s: _anomalies_known(s) and _variational(s) and s.nll_samples is not None,
    ),
    Metric(
        "knn_accuracy",
        f"accuracy of a {NEIGHBOURS}-nearest-neighbour probe on the codes (labelled data of two classes or more; "
        f"fitted on the codes of at most {PROBE_EXAMPLES:,} training examples, a seeded sample where there are more)",
        ".3f",
        True,
        _probes,
        _probed,
    ),
    Metric(
        "logreg_accuracy",
        "accuracy of a logistic-regression probe on the codes (fitted on the same ones)",
        ".3f",
        True,
        _probes,
        _probed,
    ),
    # Recorded by training; evaluation keeps them.
    Metric("train_seconds", "training time, s", ".1f", False),
    Metric("parameters", "count of trained parameters (PCA: its components and mean)", "d", False),
    Metric("epochs", "epochs trained", "d", None),
)
