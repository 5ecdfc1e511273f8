"""Kept for one release, then removed: the anomaly scores live now in :mod:`aekit.evaluation.anomaly`."""

from aekit.evaluation.anomaly import (
    ELBO,
    NLL,
    RECONSTRUCTION,
    ROC,
    SAMPLES,
    SCORES,
    anomalous,
    anomaly_scores,
    check_score,
    reconstruction_nll,
    roc,
    score_key,
    score_names,
)

__all__ = [
    "ELBO",
    "NLL",
    "RECONSTRUCTION",
    "ROC",
    "SAMPLES",
    "SCORES",
    "anomalous",
    "anomaly_scores",
    "check_score",
    "reconstruction_nll",
    "roc",
    "score_key",
    "score_names",
]
