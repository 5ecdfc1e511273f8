"""The figures of a trained model on its data: a run's figures/ folder (:data:`FIGURE_NAMES`) and TensorBoard's
image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aekit.data import Dataset
from aekit.data.binarize import binarized
from aekit.data.dataset import as_float32, describe_classes, rows_of, sample_index
from aekit.evaluation.anomaly import ELBO, RECONSTRUCTION, measured_examples, measured_scores, roc, score_names
from aekit.evaluation.metrics import ELBO_DRAWS
from aekit.models import Bernoulli
from aekit.models.base import device_of
from aekit.models.inference import codes
from aekit.models.resample import downsample, upsample
from aekit.report.plots import save_codes, save_curves, save_grid, save_manifold, save_roc, save_rows

FIGURES = "figures"
N_SHOWN = 10
# The most test codes the codes figure draws (a seeded sample of them where there are more).
CODES_SHOWN = 10_000
# The figures of a run, in the order its report shows them (each where it applies).
FIGURE_NAMES = (
    "reconstructions.png",
    "roc.png",
    "upscaling.png",
    "denoising.png",
    "samples.png",
    "codes.png",
    "manifold.png",
    "interpolations.png",
    "loss.png",
)


def showcase(dataset: Dataset) -> np.ndarray:
    """The test examples shown in figures: the first of each class where there are labels, else the first ten (as
    float32, uint8 intensities / 255)."""
    return as_float32(dataset.x_test[_showcase_index(dataset)])


def _showcase_index(dataset: Dataset) -> np.ndarray:
    if dataset.y_test is None:
        return np.arange(min(N_SHOWN, len(dataset.x_test)))
    _, first = np.unique(dataset.y_test, return_index=True)
    return np.sort(first)[:N_SHOWN]


def write_figures(
    model: torch.nn.Module,
    dataset: Dataset,
    folder: Path,
    label: str,
    history: list[dict] | None = None,
    normal_classes: tuple[int, ...] | None = None,
) -> list[Path]:
    """The figures of a run in ``folder`` (names in :data:`FIGURE_NAMES`); returns their paths.

    reconstructions: test originals over their reconstructions; upscaling (an upscaler): the downsampled test
    examples, their bicubic and learned enlargements and the originals; denoising (dae): noisy, denoised and clean test
    examples; samples (models that sample): decoded draws from the prior; codes: the test codes in a plane, coloured
    by label; manifold (a 2-D code of images): decodings of a grid of codes; interpolations: decodings along straight
    lines in code space between pairs of test examples; loss (given the ``history``): the loss per epoch; roc (given
    the ``normal_classes`` a model was trained on, of labelled data, or of data whose labels mark anomalies): the ROC
    curves of its anomaly scores on the examples :func:`aekit.evaluation.anomaly.measured_examples` says.
    """
    folder = Path(folder)
    written = _example_figures(model, dataset, folder, label) + _code_figures(model, dataset, folder, label)
    if model.gives_codes and measured_examples(dataset, normal_classes) is not None:
        written.append(folder / "roc.png")
        _save_roc(written[-1], model, dataset, label, normal_classes)
    if history:
        written.append(folder / "loss.png")
        save_curves(
            written[-1],
            history,
            "loss per example "
            + ("(cross-entropy, nats)" if model.likelihood is Bernoulli else "(sum of squared errors)"),
            f"{label} on {dataset.name}: loss per epoch",
        )
    return written


def _example_figures(model: torch.nn.Module, dataset: Dataset, folder: Path, label: str) -> list[Path]:
    """The reconstructions, upscaling and denoising figures of :func:`write_figures`: what the model makes of the
    shown test examples."""
    shown = showcase(dataset)
    written = [folder / "reconstructions.png"]
    save_rows(
        written[-1],
        {"original": shown, label: model.reconstruct(shown)},
        f"{dataset.name}: test examples and their {label} reconstructions",
    )
    factor = model.upscale_factor
    if factor:
        low = downsample(shown, factor)
        written.append(folder / "upscaling.png")
        save_rows(
            written[-1],
            {
                f"1/{factor} size": upsample(low, factor, "nearest"),
                "bicubic": upsample(low, factor, "bicubic"),
                label: model.reconstruct(shown),
                "original": shown,
            },
            f"{dataset.name}: test examples downsampled by {factor}, enlarged by bicubic interpolation and by {label}",
        )
    if model.factors:
        written.append(folder / "upscaling.png")
        factor = max(model.factors)
        save_rows(
            written[-1],
            _enlargements(model, shown, factor, label),
            f"{dataset.name}: test examples downsampled by {factor} (bicubic), enlarged by bicubic interpolation "
            f"and by {label}",
        )
    if model.noise is not None:
        noisy = _corrupted(model, shown)
        written.append(folder / "denoising.png")
        save_rows(
            written[-1],
            {"noisy": noisy, "denoised": model.reconstruct(noisy), "clean": shown},
            f"{dataset.name}: test examples with {model.noise} noise (level {model.noise_level:g}), "
            f"denoised by {label}",
        )
    return written


def _code_figures(model: torch.nn.Module, dataset: Dataset, folder: Path, label: str) -> list[Path]:
    """The samples, codes, manifold and interpolations figures of :func:`write_figures`: the code space."""
    written = []
    if not model.gives_codes:
        return written
    if hasattr(model, "sample"):
        written.append(folder / "samples.png")
        save_grid(written[-1], _samples(model), f"{label}: decoded samples from the prior")
    x, labels, sample = dataset.x_test, dataset.y_test, sample_index(len(dataset.x_test), CODES_SHOWN)
    if sample is not None:
        x, labels = rows_of(x, sample), None if labels is None else labels[sample]
    test_codes = codes(model, x)
    written.append(folder / "codes.png")
    save_codes(
        written[-1],
        test_codes,
        labels,
        f"{dataset.name}: test codes of {label}"
        + ("" if sample is None else f" (a seeded sample of {len(sample)} of {len(dataset.x_test)})")
        + (", coloured by label" if labels is not None else ""),
    )
    if test_codes.shape[1] == 2 and dataset.is_image:
        # A grid over the middle 96% of the test codes along each axis: where the decoder has seen codes.
        low, high = np.percentile(test_codes, [2, 98], axis=0)
        high = np.maximum(high, low + 1e-3)
        xs, ys = (np.linspace(low[i], high[i], 15, dtype=np.float32) for i in (0, 1))
        written.append(folder / "manifold.png")
        save_manifold(
            written[-1],
            model.decode(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)),
            xs,
            ys,
            f"{label}: decodings of a 15 x 15 grid of 2-D codes\n(2nd to 98th percentile of the test codes)",
        )
    index = _showcase_index(dataset)
    if len(index) >= 2:
        written.append(folder / "interpolations.png")
        rows, steps = _interpolations(model, dataset, index[0::2][: len(index) // 2], index[1::2])
        save_rows(
            written[-1],
            rows,
            f"{dataset.name}: {label} decodings along straight lines in code space between pairs of test examples",
            columns=["start"] + [f"{t:.2g}" for t in steps] + ["end"],
        )
    return written


def _save_roc(path: Path, model: torch.nn.Module, dataset: Dataset, label: str, normal: tuple[int, ...] | None) -> None:
    """The ROC curve of each anomaly score of ``model`` but the costly NLL estimate (the reconstruction NLL, and the
    VAE's negative ELBO from the draws its metric takes) on the examples the metrics measure
    (:func:`aekit.evaluation.anomaly.measured_examples`: the test split's classes other than ``normal``, or every
    example a table's labels mark); on the seeded binarization the metrics take, for a model trained on binarized
    data."""
    measured = measured_examples(binarized(dataset) if model.binarize else dataset, normal)
    curves = {
        score: roc(measured_scores(model, measured, score, ELBO_DRAWS), measured.truth)
        for score in score_names(model)
        if score in (RECONSTRUCTION, ELBO)
    }
    anomalies = int(measured.truth.sum())
    if normal is None:
        title = f"{anomalies} of its {len(measured.truth)} examples labelled anomalies"
    else:
        title = (
            f"class{'es' if len(normal) > 1 else ''} {describe_classes(dataset, normal, ',')} normal, the other "
            f"{anomalies} test examples anomalies"
        )
    save_roc(path, curves, f"{label} on {dataset.name}: {title}")


def _interpolations(
    model: torch.nn.Module, dataset: Dataset, starts: np.ndarray, ends: np.ndarray, steps: int = 9
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """For each pair of test examples (starts[i], ends[i]): the start, the decodings of (1 - t) z_start + t z_end
    for ``steps`` values of t from 0 to 1, then the end. Rows are named by the pair's labels (or test indices)."""
    x = dataset.x_test
    t = np.linspace(0, 1, steps, dtype=np.float32)
    z_start, z_end = codes(model, x[starts]), codes(model, x[ends])
    first, last = as_float32(x[starts]), as_float32(x[ends])
    path = z_start[:, None] + t[None, :, None] * (z_end - z_start)[:, None]
    decoded = model.decode(path.reshape(-1, path.shape[-1])).reshape(len(starts), steps, *dataset.shape)
    names = dataset.y_test if dataset.y_test is not None else [f"#{i}" for i in range(len(x))]
    return (
        {
            f"{names[a]} \u2192 {names[b]}": np.concatenate([first[i : i + 1], decoded[i], last[i : i + 1]])
            for i, (a, b) in enumerate(zip(starts, ends))
        },
        t,
    )


def _samples(model: torch.nn.Module, n: int = 64) -> np.ndarray:
    """Decoded draws from the model's prior, from a fixed seed."""
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator(device_of(model)).manual_seed(0)).cpu().numpy()


@torch.no_grad()
def _enlargements(model: torch.nn.Module, x: np.ndarray, factor: int, label: str) -> dict[str, np.ndarray]:
    """The rows of a restoration model's upscaling figure: ``x`` shrunk by ``factor`` (shown at full size), its
    bicubic enlargement, the model's, and ``x`` (each cropped to multiples of ``factor``)."""
    clean = torch.from_numpy(x).to(device_of(model))
    low = model.shrink(clean, factor)
    bicubic = torch.nn.functional.interpolate(low, scale_factor=factor, mode="bicubic")
    nearest = torch.nn.functional.interpolate(low, scale_factor=factor)
    rows = {f"1/{factor} size": nearest, "bicubic": bicubic, label: model.enlarge(low, factor), "original": clean}
    return {
        name: row[..., : low.shape[-2] * factor, : low.shape[-1] * factor].clamp(0, 1).cpu().numpy()
        for name, row in rows.items()
    }


def _corrupted(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """``x`` with the model's own corruption from a fixed seed, on a forked RNG so training's stream is untouched."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(0)
        return model.corrupt(torch.from_numpy(x).to(device)).cpu().numpy()


def image_grids(model: torch.nn.Module, dataset: Dataset) -> dict[str, tuple[np.ndarray, int]]:
    """TensorBoard's image grids for the model as it is now (evaluated in eval mode): the shown test examples over
    their reconstructions, and decoded prior samples; none for data that are not images."""
    if not dataset.is_image:
        return {}
    shown = showcase(dataset)
    was_training = model.training
    model.eval()
    try:
        grids = {"reconstructions": (np.concatenate([shown, model.reconstruct(shown)]), len(shown))}
        if hasattr(model, "sample"):
            grids["samples"] = (_samples(model), 8)
    finally:
        model.train(was_training)
    return grids
