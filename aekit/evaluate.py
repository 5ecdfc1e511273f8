"""Metrics on held-out data, named as in DESIGN.md (units in the names where they are not obvious)."""
from __future__ import annotations

import math

import numpy as np
import torch

from aekit.data import Dataset
from aekit.models import VAE, Bernoulli
from aekit.models.base import device_of
from aekit.trainer import mean_loss


@torch.no_grad()
def codes(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The code of each example (the posterior mean for the VAE), as a numpy array."""
    device = device_of(model)
    return np.concatenate([model.encode(torch.from_numpy(x[i:i + batch_size]).to(device)).cpu().numpy()
                           for i in range(0, len(x), batch_size)])


@torch.no_grad()
def reconstruction_metrics(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """sse_per_example (sum of squared errors), mse (per element) and, for a Bernoulli model, bce_per_example
    (cross-entropy in nats) of the reconstructions decode(encode(x))."""
    model.eval()
    device = device_of(model)
    bernoulli = getattr(model, "likelihood", None) is Bernoulli
    sse, bce = 0.0, 0.0
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start:start + batch_size]).to(device)
        if bernoulli:
            logits = model.decoder(model.encode(batch))
            bce += Bernoulli.nll(logits, batch).sum().item()
            reconstruction = Bernoulli.mean(logits)
        else:
            reconstruction = model.reconstruct(batch)
        sse += (reconstruction - batch).pow(2).sum().item()
    n, elements = len(x), math.prod(x.shape[1:])
    metrics = {"sse_per_example": sse / n, "mse": sse / (n * elements)}
    if bernoulli:
        metrics["bce_per_example"] = bce / n
    return metrics


def probe_accuracies(train_codes: np.ndarray, y_train: np.ndarray, test_codes: np.ndarray,
                     y_test: np.ndarray) -> dict[str, float]:
    """Test accuracy of a 5-nearest-neighbour and a logistic-regression classifier fitted on the training codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    knn = KNeighborsClassifier(n_neighbors=5).fit(train_codes, y_train)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train_codes, y_train)
    return {"knn_accuracy": float(knn.score(test_codes, y_test)),
            "logreg_accuracy": float(logreg.score(test_codes, y_test))}


def evaluate(model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
    """All metrics of ``model`` on the test split: reconstruction, the VAE's negative ELBO, probe accuracies."""
    model.eval()
    metrics = reconstruction_metrics(model, dataset.x_test)
    if isinstance(model, VAE):
        metrics["neg_elbo"] = mean_loss(model, torch.from_numpy(dataset.x_test).to(device_of(model)))["loss"]
    if dataset.y_train is not None and dataset.y_test is not None:
        metrics.update(probe_accuracies(codes(model, dataset.x_train), dataset.y_train,
                                        codes(model, dataset.x_test), dataset.y_test))
    return metrics
