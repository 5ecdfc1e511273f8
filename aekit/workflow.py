"""Whole jobs on run folders: train a run (or resume it), evaluate a run, and the demo comparison.

A run is described by flat *options* (what the user asked for, e.g. ``loss="auto"``), stored in config.json beside
the resolved model spec that :func:`aekit.load` rebuilds. Everything is validated before the first file is written,
and a run that fails before finishing an epoch leaves no folder behind.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from aekit import __version__, distributed, runs
from aekit.atomic import check_folder
from aekit.data import Dataset, load_dataset
from aekit.data.dataset import as_float32
from aekit.errors import AekitError, RunError
from aekit.evaluate import codes, downsample, evaluate, upsample
from aekit.html_report import REPORT, write_report
from aekit.models import Bernoulli, DenoisingAE, ModelSpec, build_model, choose_likelihood
from aekit.models.base import device_of
from aekit.projector import MAX_POINTS, write_projector
from aekit.report import markdown_table, save_codes, save_curves, save_grid, save_manifold, save_rows
from aekit.tensorboard import TensorBoardLog
from aekit.trainer import TrainSettings, resolve_device, train

_MODEL_OPTIONS = {f.name: f.default for f in fields(ModelSpec) if f.name not in ("shape", "likelihood", "standardize")}
_MODEL_OPTIONS["model"] = "ae"
_TRAIN_OPTIONS = {f.name: f.default for f in fields(TrainSettings)}
_DATA_OPTIONS = {"dataset": "digits", "data_dir": None, "test_fraction": 0.2}
# standardize: real-valued data is standardized per feature inside the model (see aekit.models.standardize).
DEFAULTS = {**_MODEL_OPTIONS, "loss": "auto", "standardize": True, **_DATA_OPTIONS, **_TRAIN_OPTIONS}
# What a run made before an option existed was trained with, where that differs from the option's default now.
BEFORE_THEIR_TIME = {"standardize": False}
# The fewest optimizer steps an epoch should have: a default batch larger than the data allows is made smaller.
MIN_STEPS_PER_EPOCH = 10
# Options that may change when a run is resumed: they change how, not what, is trained.
_RESUMABLE = {"epochs", "compile", "cuda_graph", "precision", "log_every", "on_nan", "data_on"}
# The ways of capturing the step exclude each other: naming one on resume replaces the saved one.
_CAPTURES = {"compile", "cuda_graph"}
FIGURES = "figures"
N_SHOWN = 10
# The figures of a run, in the order its report shows them (each where it applies).
FIGURE_NAMES = ("reconstructions.png", "upscaling.png", "denoising.png", "samples.png", "codes.png", "manifold.png",
                "interpolations.png", "loss.png")
TENSORBOARD, PROJECTOR = "tensorboard", "projector"


def load_data(options: dict) -> Dataset:
    return load_dataset(options["dataset"], data_dir=options["data_dir"], seed=options["seed"],
                        test_fraction=options["test_fraction"])


def spec_for(options: dict, dataset: Dataset) -> ModelSpec:
    """The model spec of resolved ``options`` on ``dataset`` (validated; raises AekitError)."""
    likelihood = choose_likelihood(options["loss"], dataset.binary, *dataset.value_range)
    return ModelSpec.from_dict({"shape": dataset.shape, "likelihood": likelihood,
                                "standardize": bool(options["standardize"]) and likelihood == "gaussian",
                                **{k: options[k] for k in _MODEL_OPTIONS}})


def fit_batch(options: dict, given: dict, dataset: Dataset) -> dict:
    """``options`` with a batch size that gives every epoch at least :data:`MIN_STEPS_PER_EPOCH` steps, where the
    batch was left at its default: 200 examples at a batch of 128 would make 2 steps an epoch, too few for the model
    to learn more than the mean. A batch size the user gave is kept."""
    n = len(dataset.x_train)
    if "batch_size" in given or math.ceil(n / options["batch_size"]) >= MIN_STEPS_PER_EPOCH:
        return options
    return {**options, "batch_size": max(1, n // MIN_STEPS_PER_EPOCH)}


def _settings(options: dict) -> TrainSettings:
    return TrainSettings(**{k: options[k] for k in _TRAIN_OPTIONS})


def _resolve_options(out: Path, given: dict, resume: bool, replace_config: bool = False) -> dict:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise AekitError(f"unknown options {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    if not resume:
        # A folder with no checkpoint holds nothing to resume (see runs.holds_run): the run starts there again.
        if runs.holds_run(out) and not replace_config:
            raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
        options = {**DEFAULTS, **given}
        if options["data_dir"] is None and Path(options["dataset"]).exists():
            options["dataset"] = str(Path(options["dataset"]).resolve())
        return options
    saved = runs.read_config(out).get("options")
    if not runs.holds_run(out):
        raise runs.no_checkpoint(out)
    if not isinstance(saved, dict) or not set(saved) <= set(DEFAULTS):
        raise RunError(f"{out / runs.CONFIG} has no usable options section; train the run again without --resume")
    mistyped = _mistyped(saved)
    if mistyped:
        raise RunError(f"{out / runs.CONFIG}: saved options of the wrong kind: {', '.join(mistyped)}; restore the "
                       "file or train the run again without --resume")
    # Options added to aekit after the run was made take what it was trained with.
    saved = {**DEFAULTS, **BEFORE_THEIR_TIME, **saved}
    changed = sorted(k for k, v in given.items() if k not in _RESUMABLE and _normal(v) != _normal(saved[k]))
    if changed:
        raise AekitError(f"the run in {out} was trained with other settings for {', '.join(changed)}; drop those "
                         "options to resume it, or start a new run in another --out")
    if given.keys() & _CAPTURES:
        saved.update(dict.fromkeys(_CAPTURES, False))
    return {**saved, **{k: given[k] for k in _RESUMABLE if k in given}}


def _mistyped(options: dict) -> list[str]:
    """Each saved option whose value is not of its kind, as "name 'value' (not a KIND)"."""
    wrong = []
    for name, value in options.items():
        default = DEFAULTS[name]
        if name in ("hidden", "discriminator_hidden"):
            kind = "list of sizes"
            fits = ((value is None and default is None)
                    or (isinstance(value, list) and bool(value) and all(type(v) is int for v in value)))
        elif default is None:
            kind, fits = "path", value is None or isinstance(value, str)
        elif isinstance(default, bool):
            kind, fits = "true or false", isinstance(value, bool)
        elif isinstance(default, float):
            kind, fits = "number", type(value) in (int, float)
        elif isinstance(default, int):
            kind, fits = "whole number", type(value) is int
        else:
            kind, fits = "name", isinstance(value, str)
        if not fits:
            wrong.append(f"{name} {value!r:.40} (not a {kind})")
    return wrong


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def train_run(out: str | Path, given: dict | None = None, *, resume: bool = False, device: str = "auto",
              progress: bool = True, tensorboard: bool = False) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) the run in ``out`` with the ``given`` options over :data:`DEFAULTS`.

    Writes config.json, the per-epoch checkpoint files, metrics.json, figures and report.html, and with
    ``tensorboard`` a TensorBoard log in out/tensorboard; returns the model and metrics. The folder is locked before
    anything in it is looked at (:class:`aekit.runs.RunLock`), so of several processes pointed at one ``out`` one
    proceeds and the others are refused. A resume rewrites the weights and history from the checkpoint and then
    writes the metrics, figures and report, so it also finishes a run whose epochs were done when it failed.
    """
    out = Path(out)
    with _exclusive(out, create=not resume):
        # torchrun relaunched the workers after a failure: continue from the last checkpoint, or start again if the
        # failed attempt finished no epoch (its config.json is then ours to replace).
        restarted = distributed.restarted()
        if restarted:
            resume = (out / runs.CHECKPOINT).exists()
        options = _resolve_options(out, dict(given or {}), resume, replace_config=restarted)
        dataset = load_data(options)
        if not resume:
            options = fit_batch(options, dict(given or {}), dataset)
        spec = spec_for(options, dataset)
        if resume and runs.model_spec(runs.read_config(out), out) != spec:
            raise RunError(f"{out / runs.CONFIG}: its model settings do not match its options; restore the file or "
                           "train the run again without --resume")
        settings = _settings(options)
        torch_device = resolve_device(device)
        if distributed.launched_by_torchrun():
            torch_device = distributed.init_from_env(torch_device)
            # Every rank has validated the options before rank 0 writes the first file.
            torch.distributed.barrier()
        main = distributed.is_main()
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed)
        model = build_model(spec)
        # Made (and refused where TensorBoard is missing) before anything is written; rank 0 alone logs.
        board = TensorBoardLog(out / TENSORBOARD) if tensorboard and main else None
        if not resume and main:
            runs.write_json(out / runs.CONFIG, {"aekit_version": __version__, "options": _jsonable(options),
                                                "model": _jsonable(spec.to_dict())})
        try:
            history = train(model, dataset, settings, out=out, device=torch_device, resume=resume,
                            progress=progress,
                            on_epoch_end=board and (lambda record: board.log_epoch(record, _grids(model, dataset))))
        except BaseException:
            if board is not None:
                board.close()
            raise
        metrics = {"train_seconds": sum(r["seconds"] for r in history), "epochs": len(history),
                   "parameters": _parameters(model), "batch_size": settings.batch_size}
        if main:
            metrics = {**evaluate(model, dataset), **metrics}
            if board is not None:
                _finish_board(board, model, dataset, history)
            write_figures(model, dataset, out / FIGURES, label=spec.model, history=history)
            write_run_report(out, metrics)
            # Last: a run folder with metrics.json is a finished one (compare reuses it as it is).
            runs.write_json(out / runs.METRICS, metrics)
    return model, metrics


@contextlib.contextmanager
def _exclusive(out: Path, create: bool):
    """Hold ``out``'s lock for the block; under torchrun rank 0 alone does (the ranks have not joined yet, so RANK
    names it). A block that fails before the folder holds a run removes the folder if the lock made it, so a
    mistake leaves nothing behind; elsewhere what is left is no run (runs.holds_run) and the same command retries."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    with runs.RunLock(out, create=create) as lock:
        try:
            yield
        except BaseException:
            if lock.created and not runs.holds_run(out):
                shutil.rmtree(out, ignore_errors=True)
            raise


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "cpu",
                 nll_samples: int | None = None) -> dict:
    """The metrics of a trained run on its test split, also written to its metrics.json and report.html; with
    ``nll_samples`` = k also the VAE's importance-weighted NLL estimate ``nll_is_{k}`` (estimates from earlier calls
    are kept). A run that another process holds (a training) is refused; in a read-only run folder the metrics are
    returned without writing, which a line on stderr says."""
    run_dir = Path(run_dir)
    with runs.RunLock(run_dir, create=False) as lock:
        model, dataset = _load_run(run_dir, data_dir, device)
        previous = {}
        if (run_dir / runs.METRICS).exists():
            previous = {k: v for k, v in runs.read_json(run_dir / runs.METRICS).items()
                        if k in ("train_seconds", "epochs", "parameters") or k.startswith("nll_is_")}
        fresh = evaluate(model, dataset, nll_samples)
        metrics = {**fresh, **{k: v for k, v in previous.items() if k not in fresh}}
        if lock.writable:
            runs.write_json(run_dir / runs.METRICS, metrics)
            write_run_report(run_dir, metrics)
        else:
            print(f"aekit: {run_dir} is read-only, so its {runs.METRICS} and {REPORT} were left as they were",
                  file=sys.stderr)
    return metrics


def _load_run(run_dir: Path, data_dir: str | None, device: str) -> tuple[torch.nn.Module, Dataset]:
    """A trained run's model and the data it was trained on (``data_dir`` overriding where mnist is read from)."""
    config = runs.read_config(run_dir)
    options = config.get("options")
    if not isinstance(options, dict) or not set(_DATA_OPTIONS) | {"seed"} <= set(options):
        raise RunError(f"{run_dir / runs.CONFIG} does not say which data the run used; train it again")
    model = runs.load(run_dir, resolve_device(device))
    dataset = load_data({**options, **({"data_dir": data_dir} if data_dir else {})})
    expected = tuple(config["model"]["shape"])
    if dataset.shape != expected:
        raise RunError(f"the run expects examples of shape {expected} but the data has {dataset.shape}")
    return model, dataset


def export_projector(run_dir: str | Path, out: str | Path | None = None, *, split: str = "test",
                     max_points: int = MAX_POINTS, data_dir: str | None = None, device: str = "cpu") -> Path:
    """Write the codes of the first ``max_points`` examples of a run's ``split`` as Embedding Projector files
    (see :mod:`aekit.projector`) into ``out`` (default: the run's projector/ folder); returns that folder. A run
    that another process holds (a training) is refused."""
    run_dir = Path(run_dir)
    if split not in ("test", "train"):
        raise AekitError(f"unknown split {split!r}; use test or train")
    if max_points < 1:
        raise AekitError(f"--max-points {max_points} must be at least 1")
    folder = run_dir / PROJECTOR if out is None else Path(out)
    check_folder(folder)
    with runs.RunLock(run_dir, create=False):
        model, dataset = _load_run(run_dir, data_dir, device)
        x = (dataset.x_test if split == "test" else dataset.x_train)[:max_points]
        y = dataset.y_test if split == "test" else dataset.y_train
        return write_projector(folder, codes(model, x), None if y is None else y[:max_points],
                               as_float32(x) if dataset.is_image else None, name=f"{split}_codes")


def showcase(dataset: Dataset) -> np.ndarray:
    """The test examples shown in figures: the first of each class where there are labels, else the first ten (as
    float32, uint8 intensities / 255)."""
    return as_float32(dataset.x_test[_showcase_index(dataset)])


def _showcase_index(dataset: Dataset) -> np.ndarray:
    if dataset.y_test is None:
        return np.arange(min(N_SHOWN, len(dataset.x_test)))
    _, first = np.unique(dataset.y_test, return_index=True)
    return np.sort(first)[:N_SHOWN]


def write_figures(model: torch.nn.Module, dataset: Dataset, folder: Path, label: str,
                  history: list[dict] | None = None) -> list[Path]:
    """The figures of a run in ``folder`` (names in :data:`FIGURE_NAMES`); returns their paths.

    reconstructions: test originals over their reconstructions; upscaling (an upscaler): the downsampled test
    examples, their bicubic and learned enlargements and the originals; denoising (dae): noisy, denoised and clean test
    examples; samples (models that sample): decoded draws from the prior; codes: the test codes in a plane, coloured
    by label; manifold (a 2-D code of images): decodings of a grid of codes; interpolations: decodings along straight
    lines in code space between pairs of test examples; loss (given the ``history``): the loss per epoch.
    """
    folder = Path(folder)
    shown = showcase(dataset)
    written = [folder / "reconstructions.png"]
    save_rows(written[-1], {"original": shown, label: model.reconstruct(shown)},
              f"{dataset.name}: test examples and their {label} reconstructions")
    factor = getattr(model, "upscale_factor", None)
    if factor:
        low = downsample(shown, factor)
        written.append(folder / "upscaling.png")
        save_rows(written[-1], {f"1/{factor} size": upsample(low, factor, "nearest"),
                                "bicubic": upsample(low, factor, "bicubic"), label: model.reconstruct(shown),
                                "original": shown},
                  f"{dataset.name}: test examples downsampled by {factor}, enlarged by bicubic interpolation and "
                  f"by {label}")
    if isinstance(model, DenoisingAE):
        noisy = _corrupted(model, shown)
        written.append(folder / "denoising.png")
        save_rows(written[-1], {"noisy": noisy, "denoised": model.reconstruct(noisy), "clean": shown},
                  f"{dataset.name}: test examples with {model.noise} noise (level {model.noise_level:g}), "
                  f"denoised by {label}")
    if hasattr(model, "sample"):
        written.append(folder / "samples.png")
        save_grid(written[-1], _samples(model), f"{label}: decoded samples from the prior")
    test_codes = codes(model, dataset.x_test)
    written.append(folder / "codes.png")
    save_codes(written[-1], test_codes, dataset.y_test, f"{dataset.name}: test codes of {label}"
               + (", coloured by label" if dataset.y_test is not None else ""))
    if test_codes.shape[1] == 2 and dataset.is_image:
        # A grid over the middle 96% of the test codes along each axis: where the decoder has seen codes.
        low, high = np.percentile(test_codes, [2, 98], axis=0)
        high = np.maximum(high, low + 1e-3)
        xs, ys = (np.linspace(low[i], high[i], 15, dtype=np.float32) for i in (0, 1))
        written.append(folder / "manifold.png")
        save_manifold(written[-1], model.decode(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)), xs, ys,
                      f"{label}: decodings of a 15 x 15 grid of 2-D codes\n(2nd to 98th percentile of the test codes)")
    index = _showcase_index(dataset)
    if len(index) >= 2:
        written.append(folder / "interpolations.png")
        rows, steps = _interpolations(model, dataset, index[0::2][:len(index) // 2], index[1::2])
        save_rows(written[-1], rows, f"{dataset.name}: {label} decodings along straight lines in code space "
                  "between pairs of test examples", columns=["start"] + [f"{t:.2g}" for t in steps] + ["end"])
    if history:
        written.append(folder / "loss.png")
        save_curves(written[-1], history, "loss per example " + ("(cross-entropy, nats)" if getattr(
            model, "likelihood", None) is Bernoulli else "(sum of squared errors)"),
            f"{label} on {dataset.name}: loss per epoch")
    return written


def write_run_report(run_dir: Path, metrics: dict) -> Path:
    """run_dir/report.html: the run's metrics, its figures (those of :data:`FIGURE_NAMES` it has) and config."""
    config = runs.read_config(run_dir)
    options = config.get("options", {})
    title = f"{config['model'].get('model', 'model')} on {Path(str(options.get('dataset', '?'))).name}: {run_dir}"
    figures = [run_dir / FIGURES / name for name in FIGURE_NAMES if (run_dir / FIGURES / name).is_file()]
    return write_report(run_dir / REPORT, title, config, [{"model": config["model"].get("model"), **metrics}],
                        figures)


def _interpolations(model: torch.nn.Module, dataset: Dataset, starts: np.ndarray, ends: np.ndarray,
                    steps: int = 9) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """For each pair of test examples (starts[i], ends[i]): the start, the decodings of (1 - t) z_start + t z_end
    for ``steps`` values of t from 0 to 1, then the end. Rows are named by the pair's labels (or test indices)."""
    x = dataset.x_test
    t = np.linspace(0, 1, steps, dtype=np.float32)
    z_start, z_end = codes(model, x[starts]), codes(model, x[ends])
    first, last = as_float32(x[starts]), as_float32(x[ends])
    path = z_start[:, None] + t[None, :, None] * (z_end - z_start)[:, None]
    decoded = model.decode(path.reshape(-1, path.shape[-1])).reshape(len(starts), steps, *dataset.shape)
    names = dataset.y_test if dataset.y_test is not None else [f"#{i}" for i in range(len(x))]
    return ({f"{names[a]} \u2192 {names[b]}": np.concatenate([first[i:i + 1], decoded[i], last[i:i + 1]])
             for i, (a, b) in enumerate(zip(starts, ends))}, t)


def _samples(model: torch.nn.Module, n: int = 64) -> np.ndarray:
    """Decoded draws from the model's prior, from a fixed seed."""
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator(device_of(model)).manual_seed(0)).cpu().numpy()


def _corrupted(model: DenoisingAE, x: np.ndarray) -> np.ndarray:
    """``x`` with the model's own corruption from a fixed seed, on a forked RNG so training's stream is untouched."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(0)
        return model.corrupt(torch.from_numpy(x).to(device)).cpu().numpy()


def _grids(model: torch.nn.Module, dataset: Dataset) -> dict[str, tuple[np.ndarray, int]]:
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


def _finish_board(board: TensorBoardLog, model: torch.nn.Module, dataset: Dataset, history: list[dict]) -> None:
    """The end of a TensorBoard log: the test codes as an embedding, then close it."""
    try:
        if getattr(model, "closed_form", False):  # fitted without an epoch loop, so nothing called back
            board.log_epoch(history[-1], _grids(model, dataset))
        x = dataset.x_test[:MAX_POINTS]
        board.log_embedding(codes(model, x), None if dataset.y_test is None else dataset.y_test[:MAX_POINTS],
                            as_float32(x) if dataset.is_image else None)
    finally:
        board.close()


def demo(out: str | Path, *, code_dim: int = 10, epochs: int = 100, progress: bool = True) -> str:
    """The main job: PCA, an auto-encoder and a VAE on ``digits`` at one code size; one figure of the same test
    digits reconstructed by each, and a table of their test metrics. Returns the table (Markdown)."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise RunError(f"{out} is not empty; remove it or choose another --out")
    check_folder(out)
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
