"""Metrics on held-out data, named as in DESIGN.md (units in the names where they are not obvious); :func:`evaluate`
computes those of the metric registry (:mod:`aekit.metrics`, where each is declared) that apply to a model.

Models see data through :func:`batches` (a chunk of rows at a time, as the model takes them) and inside
:func:`evaluating` (evaluation mode for the block, the model's own mode after it).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from aekit.data import Dataset
from aekit.data.binarize import binarized
from aekit.data.dataset import CHUNK_ROWS, chunks, rows_of, sample_index
from aekit.errors import AekitError
from aekit.metrics import PROBE_EXAMPLES, REGISTRY, Subject
from aekit.models import VAE, Bernoulli, log_importance_weights
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
def in_batches(model: torch.nn.Module, method: str, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``model.method`` (encode, decode, reconstruct) of every example, ``batch_size`` at a time on the model's
    device in evaluation mode, as a numpy array."""
    function = getattr(model, method)
    with evaluating(model):
        return filled((function(batch).cpu().numpy() for batch in batches(x, batch_size, model)), len(x))


def codes(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The code of each example (the posterior mean for the VAE), as a numpy array (n, values): a code map
    flattened."""
    return in_batches(model, "encode", x, batch_size).reshape(len(x), -1)


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
    model: torch.nn.Module, dataset: Dataset, most: int = PROBE_EXAMPLES, seed: int = 0
) -> dict[str, float]:
    """Test accuracy of a 5-nearest-neighbour and a logistic-regression classifier fitted on the codes of the
    training examples (of a seeded sample of ``most`` of them where there are more: memory and time stay bounded
    whatever the data's size), scored on the codes of every test example, a chunk at a time."""
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
        "knn_accuracy": KNeighborsClassifier(n_neighbors=5).fit(train_codes, y),
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
    scores, :mod:`aekit.anomaly`); by default each example has draws of its own, independent across examples, as an
    average over a test set wants. ``prepare`` is applied to each block of rows first (see :func:`batches`).
    ``model`` needs ``posterior``, ``decoder``, a likelihood with ``log_prob`` and ``standardize`` (a VAE; x is in
    the data's units, and the estimate is of their density).
    """
    if k < 1 or batch_size < 1 or max_rows < 1:
        raise AekitError(
            f"the number of importance samples ({k}), the batch size ({batch_size}) and max_rows "
            f"({max_rows}) must all be at least 1"
        )
    generator = torch.Generator(device_of(model)).manual_seed(seed)
    jacobian = float(model.standardize.log_scale_sum())
    # Filled in place (see filled()).
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
def negative_elbo(model: VAE, x: np.ndarray, batch_size: int = 1024, seed: int = 0) -> float:
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


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    nll_samples: int | None = None,
    normal_classes: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """Every registered metric (:mod:`aekit.metrics`) that applies to ``model`` on ``dataset``, measured on the
    test split in evaluation mode (the model's mode is put back after), each function computing a group of them
    called once: reconstruction, PSNR beside the bicubic and nearest baselines for an upscaler, the VAE's negative
    ELBO and, with ``nll_samples`` = k, its importance-weighted NLL estimate ``nll_is_{k}`` (nats), a codebook's
    perplexity and probe accuracies where there are labels. With ``normal_classes`` (a model trained on those
    classes only), the AUROC of its anomaly scores (:mod:`aekit.anomaly`) with the test examples of the other classes
    as the anomalies.

    A model trained with ``binarize`` is scored on one seeded binarization of the data (the same for every model).
    """
    if nll_samples is not None and not isinstance(model, VAE):
        raise AekitError(
            f"the likelihood estimate (--nll-samples) needs a VAE, not a {type(model).__name__}; drop --nll-samples"
        )
    if nll_samples is not None and nll_samples < 1:
        raise AekitError(f"--nll-samples {nll_samples} must be at least 1, e.g. 5000")
    normal = None if normal_classes is None else tuple(normal_classes)
    subject = Subject(model, binarized(dataset) if model.binarize else dataset, nll_samples, normal)
    wanted = [metric for metric in REGISTRY.values() if metric.compute is not None and metric.applies(subject)]
    values = {}
    with evaluating(model):
        for compute in dict.fromkeys(metric.compute for metric in wanted):
            values.update(compute(subject))
    return {key: value for metric in wanted for key, value in values.items() if metric.matches(key)}
