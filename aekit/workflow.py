"""Whole jobs on run folders: train a run (or resume it), evaluate a run, and the demo comparison.

A run is described by flat *options* (what the user asked for, e.g. ``loss="auto"``), stored in config.json beside
the resolved model spec that :func:`aekit.load` rebuilds. Everything is validated before the first file is written,
and a run that fails before finishing an epoch leaves no folder behind.
"""
from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from aekit import __version__, runs
from aekit.data import Dataset, load_dataset
from aekit.errors import AekitError, RunError
from aekit.evaluate import evaluate
from aekit.models import ModelSpec, build_model, choose_likelihood
from aekit.models.base import device_of
from aekit.report import markdown_table, save_grid, save_rows
from aekit.trainer import TrainSettings, resolve_device, train

_MODEL_OPTIONS = {f.name: f.default for f in fields(ModelSpec) if f.name not in ("shape", "likelihood")}
_MODEL_OPTIONS["model"] = "ae"
_TRAIN_OPTIONS = {f.name: f.default for f in fields(TrainSettings)}
_DATA_OPTIONS = {"dataset": "digits", "data_dir": None, "test_fraction": 0.2}
DEFAULTS = {**_MODEL_OPTIONS, "loss": "auto", **_DATA_OPTIONS, **_TRAIN_OPTIONS}
# Options that may change when a run is resumed: they do not change what is being trained.
_RESUMABLE = {"epochs"}
FIGURES = "figures"
N_SHOWN = 10


def load_data(options: dict) -> Dataset:
    return load_dataset(options["dataset"], data_dir=options["data_dir"], seed=options["seed"],
                        test_fraction=options["test_fraction"])


def _spec(options: dict, dataset: Dataset) -> ModelSpec:
    likelihood = choose_likelihood(options["loss"], dataset.binary, float(dataset.x_train.min()),
                                   float(dataset.x_train.max()))
    return ModelSpec(shape=dataset.shape, likelihood=likelihood, **{k: options[k] for k in _MODEL_OPTIONS})


def _settings(options: dict) -> TrainSettings:
    return TrainSettings(**{k: options[k] for k in _TRAIN_OPTIONS})


def _resolve_options(out: Path, given: dict, resume: bool) -> dict:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise AekitError(f"unknown options {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    if not resume:
        if (out / runs.CONFIG).exists():
            raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
        options = {**DEFAULTS, **given}
        if options["data_dir"] is None and Path(options["dataset"]).exists():
            options["dataset"] = str(Path(options["dataset"]).resolve())
        return options
    saved = runs.read_config(out).get("options")
    if not isinstance(saved, dict) or set(saved) != set(DEFAULTS):
        raise RunError(f"{out / runs.CONFIG} has no usable options section; train the run again without --resume")
    changed = sorted(k for k, v in given.items() if k not in _RESUMABLE and _normal(v) != _normal(saved[k]))
    if changed:
        raise AekitError(f"the run in {out} was trained with other settings for {', '.join(changed)}; drop those "
                         "options to resume it, or start a new run in another --out")
    return {**saved, **{k: given[k] for k in _RESUMABLE if k in given}}


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def train_run(out: str | Path, given: dict | None = None, *, resume: bool = False, device: str = "auto",
              progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) the run in ``out`` with the ``given`` options over :data:`DEFAULTS`.

    Writes config.json, the per-epoch checkpoint files, metrics.json and figures; returns the model and metrics.
    """
    out = Path(out)
    options = _resolve_options(out, dict(given or {}), resume)
    dataset = load_data(options)
    spec = _spec(options, dataset)
    settings = _settings(options)
    torch_device = resolve_device(device)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    model = build_model(spec)

    created = not out.exists()
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.CONFIG, {"aekit_version": __version__, "options": _jsonable(options),
                                            "model": _jsonable(spec.to_dict())})
    try:
        history = train(model, dataset, settings, out=out, device=torch_device, resume=resume, progress=progress)
    except BaseException:
        # Nothing finished: remove the folder we made rather than leave a run that cannot be loaded or resumed.
        if created and not (out / runs.CHECKPOINT).exists() and not (out / runs.WEIGHTS).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    metrics = {**evaluate(model, dataset), "train_seconds": sum(r["seconds"] for r in history),
               "epochs": len(history), "parameters": _parameters(model)}
    runs.write_json(out / runs.METRICS, metrics)
    write_figures(model, dataset, out / FIGURES, label=spec.model)
    return model, metrics


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "cpu") -> dict:
    """The metrics of a trained run on its test split, also written to its metrics.json."""
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    options = config.get("options")
    if not isinstance(options, dict) or not set(_DATA_OPTIONS) | {"seed"} <= set(options):
        raise RunError(f"{run_dir / runs.CONFIG} does not say which data the run used; train it again")
    model = runs.load(run_dir, resolve_device(device))
    dataset = load_data({**options, **({"data_dir": data_dir} if data_dir else {})})
    expected = tuple(config["model"]["shape"])
    if dataset.shape != expected:
        raise RunError(f"the run expects examples of shape {expected} but the data has {dataset.shape}")
    previous = {}
    if (run_dir / runs.METRICS).exists():
        previous = {k: v for k, v in runs.read_json(run_dir / runs.METRICS).items()
                    if k in ("train_seconds", "epochs", "parameters")}
    metrics = {**evaluate(model, dataset), **previous}
    runs.write_json(run_dir / runs.METRICS, metrics)
    return metrics


def showcase(dataset: Dataset) -> np.ndarray:
    """The test examples shown in figures: the first of each class where there are labels, else the first ten."""
    if dataset.y_test is None:
        return dataset.x_test[:N_SHOWN]
    _, first = np.unique(dataset.y_test, return_index=True)
    return dataset.x_test[np.sort(first)[:N_SHOWN]]


def write_figures(model: torch.nn.Module, dataset: Dataset, folder: Path, label: str) -> None:
    """figures/reconstructions.png (test originals over their reconstructions) and, for models that sample,
    figures/samples.png (decoded draws from the prior)."""
    originals = showcase(dataset)
    save_rows(folder / "reconstructions.png", {"original": originals, label: model.reconstruct(originals)},
              f"{dataset.name}: test examples and their {label} reconstructions")
    if hasattr(model, "sample"):
        with torch.no_grad():
            samples = model.sample(64, generator=torch.Generator(device_of(model)).manual_seed(0)).cpu().numpy()
        save_grid(folder / "samples.png", samples, f"{label}: decoded samples from the prior")


def demo(out: str | Path, *, code_dim: int = 10, epochs: int = 100, progress: bool = True) -> str:
    """The main job: PCA, an auto-encoder and a VAE on ``digits`` at one code size; one figure of the same test
    digits reconstructed by each, and a table of their test metrics. Returns the table (Markdown)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} is not empty; remove it or choose another --out")
    dataset = load_dataset("digits")
    originals = showcase(dataset)
    rows, reconstructions = [], {"original": originals}
    for name in ("pca", "ae", "vae"):
        if progress:
            print(f"training {name} ...", flush=True)
        model, metrics = train_run(out / name, {"model": name, "code_dim": code_dim, "epochs": epochs,
                                                "batch_size": 64}, device="cpu", progress=progress)
        reconstructions[name.upper()] = model.reconstruct(originals)
        rows.append({"model": name.upper(), **metrics})
    save_rows(out / "reconstructions.png", reconstructions,
              f"digits test set: originals and reconstructions from a {code_dim}-dimensional code")
    table = (f"Test split of scikit-learn's digits ({len(dataset.x_test)} images of 8x8, intensities in [0, 1]), "
             f"code size {code_dim}, {epochs} epochs for the auto-encoders.\n\n"
             + markdown_table(rows, ["model", "sse_per_example", "mse", "bce_per_example", "neg_elbo",
                                     "knn_accuracy", "logreg_accuracy", "parameters", "train_seconds"],
                              {"sse_per_example": ".3f", "mse": ".5f", "bce_per_example": ".2f", "neg_elbo": ".2f",
                               "knn_accuracy": ".3f", "logreg_accuracy": ".3f", "train_seconds": ".1f"}))
    runs.atomic_write(out / "results.md", table.encode())
    return table


def _jsonable(options: dict) -> dict:
    return {k: _normal(v) for k, v in options.items()}


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
