"""Evaluation: the numbers a trained model is judged by. :mod:`~aekit.evaluation.metrics` is the registry where each
metric is declared (it loads without torch), :mod:`~aekit.evaluation.measures` the maths that computes them,
:mod:`~aekit.evaluation.anomaly` the anomaly scores; :func:`evaluate` computes every metric that applies to a model.
"""

from __future__ import annotations

from aekit.data import Dataset
from aekit.data.binarize import binarized
from aekit.errors import AekitError
from aekit.evaluation.metrics import REGISTRY, Subject

__all__ = ["evaluate"]


def evaluate(
    model,
    dataset: Dataset,
    nll_samples: int | None = None,
    normal_classes: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """Every registered metric (:mod:`aekit.evaluation.metrics`) that applies to ``model`` on ``dataset``, measured
    on the test split, each function computing a group of them called once: reconstruction, PSNR beside the bicubic
    and nearest baselines for an upscaler, the negative ELBO of a model with a variational bound and, with
    ``nll_samples`` = k, its importance-weighted NLL estimate ``nll_is_{k}`` (nats), a codebook's perplexity and probe
    accuracies where there are labels. With ``normal_classes`` (a model trained on those classes only), the AUROC of
    its anomaly scores (:mod:`aekit.evaluation.anomaly`) with the test examples of the other classes as the
    anomalies. Every measure runs the model in evaluation mode and puts its mode back after.

    A model trained with ``binarize`` is scored on one seeded binarization of the data (the same for every model).
    """
    if nll_samples is not None and not model.variational:
        raise AekitError(
            f"the likelihood estimate (--nll-samples) needs a model with a variational bound (a VAE), not a "
            f"{type(model).__name__}; drop --nll-samples"
        )
    if nll_samples is not None and nll_samples < 1:
        raise AekitError(f"--nll-samples {nll_samples} must be at least 1, e.g. 5000")
    normal = None if normal_classes is None else tuple(normal_classes)
    subject = Subject(model, binarized(dataset) if model.binarize else dataset, nll_samples, normal)
    wanted = [metric for metric in REGISTRY.values() if metric.compute is not None and metric.applies(subject)]
    values = {}
    for compute in dict.fromkeys(metric.compute for metric in wanted):
        values.update(compute(subject))
    return {key: value for metric in wanted for key, value in values.items() if metric.matches(key)}
