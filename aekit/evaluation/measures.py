"""The measures of a trained model on held-out data, each a group of the metrics that the registry
(:mod:`aekit.evaluation.metrics`) declares: reconstruction, PSNR, probes, the variational bound and the
importance-weighted likelihood estimate, codebook usage. The model sees the data a batch at a time in evaluation mode
(:mod:`aekit.models.inference`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from aekit.data import Dataset
from aekit.data.dataset import CHUNK_ROWS, chunks, rows_of, sample_index
from aekit.errors import AekitError
from aekit.models import Bernoulli, log_importance_weights
from aekit.models.base import device_of
from aekit.models.inference import batches, codes, evaluating, in_batches
from aekit.models.resample import downsample, upsample


@torch.no_grad()
def reconstruction_metrics(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """sse_per_example (sum of squared errors), mse (per element) and, for a Bernoulli model, bce_per_example
    (cross-entropy in nats) of the reconstructions decode(encode(x)), in the data's own units (a model that
    standardizes hands its reconstructions back unstandardized). For real-valued data (a Gaussian model) also r2:
    the mean over features of 1 - SSE_f / SST_f, as scikit-learn's r2_score, which no feature's scale can dominate
    (a constant feature counts 1 if reconstructed exactly, else 0)."""
    bernoulli = model.likelihood is Bernoulli
    sse, bce = 0.0, 0.0
    per_feature = {name: np.zeros(math.prod(x.shape[1:])) for name in ("sse", "sum", "squares")}
    with evaluating(model):
        for batch in batches(x, batch_size, model):
            if bernoulli:
                logits = model.decoder(model.encode(batch))
                bce += Bernoulli.nll(logits, batch).sum().item()
                reconstruction = Bernoulli.mean(logits)
            else:
                reconstruction = model.reconstruct(batch)
            errors = (reconstruction - batch).pow(2)
            sse += errors.sum().item()
            if not bernoulli:
                values = batch.flatten(1).double()
                per_feature["sse"] += errors.flatten(1).double().sum(0).cpu().numpy()
                per_feature["sum"] += values.sum(0).cpu().numpy()
                per_feature["squares"] += values.pow(2).sum(0).cpu().numpy()
    n, elements = len(x), math.prod(x.shape[1:])
    metrics = {"sse_per_example": sse / n, "mse": sse / (n * elements)}
    if bernoulli:
        metrics["bce_per_example"] = bce / n
    else:
        metrics["r2"] = _r2(per_feature["sse"], per_feature["squares"] - per_feature["sum"] ** 2 / n)
    return metrics


def _r2(sse: np.ndarray, sst: np.ndarray) -> float:
    """The mean over features of 1 - SSE / SST (1 for a constant feature reconstructed exactly, else 0)."""
    constant = sst <= 1e-12 * np.maximum(sse, 1.0)
    scores = np.where(constant, (sse == 0).astype(float), 1 - sse / np.where(constant, 1.0, sst))
    return float(scores.mean())


def probe_accuracies(
    model: torch.nn.Module, dataset: Dataset, most: int, neighbours: int, seed: int = 0
) -> dict[str, float]:
    """Test accuracy of a k-nearest-neighbour (k = ``neighbours``) and a logistic-regression classifier fitted on the
    codes of the training examples (of a seeded sample of ``most`` of them where there are more: memory and time stay
    bounded whatever the data's size), scored on the codes of every test example, a chunk at a time."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = dataset.x_train, dataset.y_train
    index = sample_index(len(x), most, seed)
    if index is not None:
        x, y = rows_of(x, index), y[index]
    train_codes = codes(model, x)
    probes = {
        "knn_accuracy": KNeighborsClassifier(n_neighbors=neighbours).fit(train_codes, y),
        "logreg_accuracy": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train_codes, y),
    }
    correct = dict.fromkeys(probes, 0)
    for start in range(0, len(dataset.x_test), CHUNK_ROWS):
        test_codes = codes(model, dataset.x_test[start : start + CHUNK_ROWS])
        labels = dataset.y_test[start : start + CHUNK_ROWS]
        for name, probe in probes.items():
            correct[name] += int((probe.predict(test_codes) == labels).sum())
    return {name: count / len(dataset.x_test) for name, count in correct.items()}


def psnr(output: np.ndarray, clean: np.ndarray) -> float:
    """Mean over examples of 10 log10(1 / mse), each example's mean squared error against the clean one, for
    intensities in [0, 1] (the error floored at 1e-10, i.e. 100 dB)."""
    mse = ((np.asarray(output, np.float64) - clean) ** 2).reshape(len(clean), -1).mean(1)
    return float(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-10))))


def upscaling_psnr(model: torch.nn.Module, x: np.ndarray) -> dict[str, float]:
    """For a model trained to upscale by f: PSNR (dB) against ``x`` of its output from x downsampled by f
    (``psnr_db``), and of the bicubic and nearest-neighbour enlargements of that downsampled x; a chunk at a time."""
    factor, totals = model.upscale_factor, np.zeros(3)
    for block in chunks(x):
        low = downsample(block, factor)
        outputs = (
            in_batches(model, "reconstruct", block),
            upsample(low, factor, "bicubic"),
            upsample(low, factor, "nearest"),
        )
        totals += [psnr(output, block) * len(block) for output in outputs]
    return dict(zip(("psnr_db", "psnr_bicubic_db", "psnr_nearest_db"), (totals / len(x)).tolist()))


@torch.no_grad()
def denoising_psnr(model: torch.nn.Module, x: np.ndarray, seed: int = 0) -> dict[str, float]:
    """For a model that undoes Gaussian noise: PSNR (dB) against ``x`` of its reconstruction of ``model.corrupt(x)``
    (one seeded draw, on a forked RNG: training's stream is untouched) as ``psnr_denoised_db``, and of that noisy x
    itself as ``psnr_noisy_db``; a chunk at a time."""
    device, totals = device_of(model), np.zeros(2)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for block in chunks(x):
            clean = torch.from_numpy(np.asarray(block, np.float32)).to(device)
            noisy = model.corrupt(clean).cpu().numpy()
            outputs = in_batches(model, "reconstruct", noisy), noisy
            totals += [psnr(output, block) * len(block) for output in outputs]
    return dict(zip(("psnr_denoised_db", "psnr_noisy_db"), (totals / len(x)).tolist()))


@torch.no_grad()
def enlarging_psnr(model: torch.nn.Module, x: np.ndarray) -> dict[str, float]:
    """For a model that enlarges by its ``factors``: per factor f, PSNR (dB) of ``model.enlarge`` of the test images'
    ``model.shrink`` against the images (cropped to multiples of f) as ``psnr_x{f}_db``, and of the bicubic
    enlargement as ``psnr_bicubic_x{f}_db``; a chunk at a time."""
    device, totals = device_of(model), {}
    with evaluating(model):
        for block in chunks(x):
            clean = torch.from_numpy(np.asarray(block, np.float32)).to(device)
            for factor in model.factors:
                low = model.shrink(clean, factor)
                target = clean[..., : low.shape[-2] * factor, : low.shape[-1] * factor].cpu().numpy()
                bicubic = torch.nn.functional.interpolate(low, scale_factor=factor, mode="bicubic")
                for key, output in (
                    (f"psnr_x{factor}_db", model.enlarge(low, factor)),
                    (f"psnr_bicubic_x{factor}_db", bicubic),
                ):
                    totals[key] = totals.get(key, 0.0) + psnr(output.clamp(0, 1).cpu().numpy(), target) * len(block)
    return {key: total / len(x) for key, total in totals.items()}


class LikelihoodEstimate(NamedTuple):
    """Per example, in nats: ``nll`` = -log (1/k) sum_s w_s, the importance-weighted estimate of -log p(x), and
    ``neg_elbo`` = -(1/k) sum_s log w_s from the same samples (so nll <= neg_elbo, by Jensen's inequality)."""

    nll: np.ndarray
    neg_elbo: np.ndarray


@torch.no_grad()
def importance_weighted_nll(
    model: torch.nn.Module,
    x,
    k: int,
    batch_size: int = 100,
    *,
    max_rows: int = 32768,
    seed: int = 0,
    same_draws: bool = False,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> LikelihoodEstimate:
    """-log p(x) ~ -log (1/k) sum_{s=1..k} p(x|z_s) p(z_s) / q(z_s|x), z_s ~ q(z|x), for each example of ``x``.

    The estimate is a stochastic upper bound on -log p(x) that tightens as k grows (Burda et al. 2015 use k = 5000)
    and is exact for any k when q(z|x) is the true posterior. Examples go ``batch_size`` at a time and their samples
    in chunks of at most ``max_rows`` decoded (example, sample) pairs, the log-sum-exp carried across chunks, so
    memory stays bounded whatever k. The samples come from a generator seeded with ``seed``: the same call gives
    the same numbers. With ``same_draws`` every example takes the same k standard normal draws eps_s (z_s = mu(x) +
    sigma(x) eps_s), so that its estimate depends on it alone, not on the examples that share its batch (anomaly
    scores, :mod:`aekit.evaluation.anomaly`); by default each example has draws of its own, independent across
    examples, as an average over a test set wants. ``prepare`` is applied to each block of rows first (see
    :func:`aekit.models.inference.batches`). ``model`` is one with a variational bound (``variational``: it has
    ``posterior``, ``decoder``, a likelihood with ``log_prob`` and ``standardize``; x is in the data's units, and the
    estimate is of their density).
    """
    if k < 1 or batch_size < 1 or max_rows < 1:
        raise AekitError(
            f"the number of importance samples ({k}), the batch size ({batch_size}) and max_rows "
            f"({max_rows}) must all be at least 1"
        )
    generator = torch.Generator(device_of(model)).manual_seed(seed)
    jacobian = float(model.standardize.log_scale_sum())
    # Filled in place (see aekit.models.inference.filled).
    nll, neg_elbo, first, shared = np.empty(len(x)), np.empty(len(x)), 0, None
    with evaluating(model):
        for batch in batches(x, batch_size, model, prepare):
            batch = model.standardize(batch)
            if same_draws and shared is None:
                shared = torch.randn(
                    (k, 1, model.code_dim), generator=generator, device=batch.device, dtype=batch.dtype
                )
            per_chunk = max(1, min(k, max_rows // len(batch)))
            log_sum, weight_sum = None, 0.0
            for done in range(0, k, per_chunk):
                eps = None if shared is None else shared[done : done + per_chunk]
                log_w = log_importance_weights(model, batch, min(per_chunk, k - done), generator, eps).double()
                chunk = torch.logsumexp(log_w, 0)
                log_sum = chunk if log_sum is None else torch.logaddexp(log_sum, chunk)
                weight_sum = weight_sum + log_w.sum(0)
            # Densities of standardized values made the data's own: log p(x) = log p(z) - sum log scale.
            nll[first : first + len(batch)] = (math.log(k) - log_sum + jacobian).cpu().numpy()
            neg_elbo[first : first + len(batch)] = (-weight_sum / k + jacobian).cpu().numpy()
            first += len(batch)
    return LikelihoodEstimate(nll, neg_elbo)


@torch.no_grad()
def negative_elbo(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024, seed: int = 0) -> float:
    """Mean over ``x`` of E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) in nats, one seeded sample z per example: the
    negative ELBO whatever the model was trained with (any beta, the iwae objective). Like the training loss, it
    is taken of the standardized values where the model standardizes (and without the Gaussian's constant)."""
    generator = torch.Generator(device_of(model)).manual_seed(seed)
    total = 0.0
    with evaluating(model):
        for batch in batches(x, batch_size, model):
            rec, kl = model.elbo_terms(model.standardize(batch), generator)
            total += (rec + kl).sum().item()
    return total / len(x)


@torch.no_grad()
def codebook_perplexity(model: torch.nn.Module, x, batch_size: int = 1024) -> float:
    """exp(H(p)), p_i the share of the code vectors of ``x`` that take entry i of the model's codebook (from
    ``model.code_indices``, int64 indices of any shape per example) and H(p) = -sum_i p_i log p_i in nats: the number
    of entries in use, from 1 (one entry for everything) to the codebook's size (all entries used alike)."""
    counts = torch.zeros(model.codebook_size, dtype=torch.int64)
    with evaluating(model):
        for batch in batches(x, batch_size, model):
            counts += torch.bincount(model.code_indices(batch).flatten(), minlength=model.codebook_size).cpu()
    p = counts[counts > 0].double() / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))
