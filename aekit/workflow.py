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
from pathlib import Path

import numpy as np
import torch

from aekit import __version__, distributed, runs
from aekit.atomic import atomic_folder, check_folder, check_not_input, check_output, make_folder
from aekit.data import Dataset, load_dataset
from aekit.data.dataset import as_float32, with_normal_training
from aekit.errors import AekitError, RunError
from aekit.evaluate import codes, evaluate
from aekit.figures import FIGURE_NAMES, FIGURES, image_grids, showcase, write_figures
from aekit.html_report import REPORT, write_report
from aekit.metrics import columns, formatted, kept, legend
from aekit.models import FAMILIES, ModelConfig, build_model, choose_likelihood, model_config
from aekit.models.config import family
from aekit.options import ANOMALY_OPTIONS, DATA_OPTIONS, TRAIN_OPTIONS, defaults, for_family, refuse_foreign
from aekit.projector import MAX_POINTS, write_projector
from aekit.report import markdown_table, save_rows
from aekit.tensorboard import TensorBoardLog
from aekit.trainer import TrainSettings, resolve_device, train

# What a run made before an option existed was trained with, where that differs from the option's default now.
BEFORE_THEIR_TIME = {"standardize": False}
# The fewest optimizer steps an epoch should have: a default batch larger than the data allows is made smaller.
MIN_STEPS_PER_EPOCH = 10
# Options that may change when a run is resumed: they change how, not what, is trained.
_RESUMABLE = {"epochs", "compile", "cuda_graph", "precision", "log_every", "on_nan", "data_on"}
# The ways of capturing the step exclude each other: naming one on resume replaces the saved one.
_CAPTURES = {"compile", "cuda_graph"}
TENSORBOARD, PROJECTOR = "tensorboard", "projector"


def load_data(options: dict) -> Dataset:
    return load_dataset(
        options["dataset"], data_dir=options["data_dir"], seed=options["seed"], test_fraction=options["test_fraction"]
    )


def normal_classes(value) -> tuple[int, ...] | None:
    """The ``normal_class`` option as a tuple of distinct labels (a label, or a list of them; None: every class)."""
    if value is None:
        return None
    labels = [value] if isinstance(value, int) else value
    if (
        not isinstance(labels, (list, tuple))
        or not labels
        or not all(type(label) is int and label >= 0 for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise AekitError(f"--normal-class {value!r} must be distinct whole numbers >= 0, e.g. 3 or 3,5")
    return tuple(labels)


def training_data(options: dict, dataset: Dataset) -> Dataset:
    """What a run trains on: ``dataset``, or with ``normal_class`` its training split's examples of those classes
    (the test split keeps them all)."""
    classes = normal_classes(options["normal_class"])
    return dataset if classes is None else with_normal_training(dataset, classes)


def spec_for(options: dict, dataset: Dataset) -> ModelConfig:
    """The model config of resolved ``options`` on ``dataset`` (validated; raises AekitError)."""
    likelihood = choose_likelihood(options["loss"], dataset.binary, *dataset.value_range)
    fields = {f.name: options[f.name] for f in family(options["model"]).options()}
    return model_config(
        options["model"],
        dataset.shape,
        likelihood=likelihood,
        # A fully convolutional net codes images of any size, which a per-pixel standardization cannot follow.
        standardize=bool(options["standardize"]) and likelihood == "gaussian" and fields.get("net") != "fully-conv",
        **fields,
    )


def fit_batch(options: dict, given: dict, dataset: Dataset) -> dict:
    """``options`` with a batch size that gives every epoch at least :data:`MIN_STEPS_PER_EPOCH` steps, where the
    batch was left at its default: 200 examples at a batch of 128 would make 2 steps an epoch, too few for the model
    to learn more than the mean. A batch size the user gave is kept."""
    n = len(dataset.x_train)
    if "batch_size" in given or math.ceil(n / options["batch_size"]) >= MIN_STEPS_PER_EPOCH:
        return options
    return {**options, "batch_size": max(1, n // MIN_STEPS_PER_EPOCH)}


def _settings(options: dict) -> TrainSettings:
    return TrainSettings(**{k: options[k] for k in TRAIN_OPTIONS})


def _resolve_options(out: Path, given: dict, resume: bool, replace_config: bool = False) -> dict:
    """The options of the run in ``out``: ``given`` over the defaults (of the family they name), or for a resume the
    saved options with the ``given`` ones that may change on a resume (the others must equal the saved)."""
    known = defaults()
    unknown = set(given) - set(known)
    if unknown:
        raise AekitError(f"unknown options {sorted(unknown)}; known: {', '.join(sorted(known))}")
    if given.get("normal_class") is not None:
        given = {**given, "normal_class": normal_classes(given["normal_class"])}
    if not resume:
        # A folder with no checkpoint holds nothing to resume (see runs.holds_run): the run starts there again.
        if runs.holds_run(out) and not replace_config:
            raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
        options = {**known, **given}
        family(options["model"])
        refuse_foreign(given, options["model"])
        if options["data_dir"] is None and Path(options["dataset"]).exists():
            options["dataset"] = str(Path(options["dataset"]).resolve())
        return for_family(options)
    saved = runs.read_config(out).get("options")
    if not runs.holds_run(out):
        raise runs.no_checkpoint(out)
    if not isinstance(saved, dict) or not set(saved) <= set(known) or saved.get("model") not in FAMILIES:
        raise RunError(f"{out / runs.CONFIG} has no usable options section; train the run again without --resume")
    mistyped = _mistyped(saved)
    if mistyped:
        raise RunError(
            f"{out / runs.CONFIG}: saved options of the wrong kind: {', '.join(mistyped)}; restore the "
            "file or train the run again without --resume"
        )
    # Options added to aekit after the run was made take what it was trained with.
    saved = for_family({**known, **BEFORE_THEIR_TIME, **saved})
    refuse_foreign({k: v for k, v in given.items() if k != "model"}, saved["model"])
    changed = sorted(k for k, v in given.items() if k not in _RESUMABLE and _normal(v) != _normal(saved[k]))
    if changed:
        raise AekitError(
            f"the run in {out} was trained with other settings for {', '.join(changed)}; drop those "
            "options to resume it, or start a new run in another --out"
        )
    if given.keys() & _CAPTURES:
        saved.update(dict.fromkeys(_CAPTURES, False))
    return {**saved, **{k: given[k] for k in _RESUMABLE if k in given}}


def _mistyped(options: dict) -> list[str]:
    """Each saved option whose value is not of its kind, as "name 'value' (not a KIND)"."""
    wrong, known = [], defaults()
    # The model options' types are their configs'; the others' are their defaults' (None: a path).
    types = {name: kind for config in FAMILIES.values() for name, kind in config.types().items()}
    for name, value in options.items():
        default = known[name]
        kind = types.get(name) or (tuple if name in ANOMALY_OPTIONS else type(default))
        if value is None and default is None:
            continue
        if kind is tuple:
            kind, fits = (
                "list of labels" if name in ANOMALY_OPTIONS else "list of sizes",
                (isinstance(value, list) and bool(value) and all(type(v) is int for v in value)),
            )
        elif kind is bool:
            kind, fits = "true or false", isinstance(value, bool)
        elif kind is float:
            kind, fits = "number", type(value) in (int, float)
        elif kind is int:
            kind, fits = "whole number", type(value) is int
        else:
            kind, fits = ("path", isinstance(value, str)) if default is None else ("name", isinstance(value, str))
        if not fits:
            wrong.append(f"{name} {value!r:.40} (not a {kind})")
    return wrong


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def train_run(
    out: str | Path,
    given: dict | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = False,
) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) the run in ``out`` with the ``given`` options over :func:`defaults`.

    Writes config.json, the per-epoch checkpoint files, metrics.json, figures and report.html, and with
    ``tensorboard`` a TensorBoard log in out/tensorboard; returns the model and metrics. The folder is locked before
    anything in it is looked at (:class:`aekit.runs.RunLock`), so of several processes pointed at one ``out`` one
    proceeds and the others are refused. A resume rewrites the weights and history from the checkpoint and then
    writes the metrics, figures and report, so it also finishes a run whose epochs were done when it failed.
    """
    out = Path(out)
    if not resume:  # before the lock, which writes a file into the folder
        given_data = given or {}
        check_not_input(out, _data_paths(given_data.get("dataset"), given_data.get("data_dir")))
    with _exclusive(out, create=not resume):
        # torchrun relaunched the workers after a failure: continue from the last checkpoint, or start again if the
        # failed attempt finished no epoch (its config.json is then ours to replace).
        restarted = distributed.restarted()
        if restarted:
            resume = (out / runs.CHECKPOINT).exists()
        options = _resolve_options(out, dict(given or {}), resume, replace_config=restarted)
        dataset = load_data(options)
        training = training_data(options, dataset)
        if not resume:
            options = fit_batch(options, dict(given or {}), training)
        spec = _checked_spec(out, options, training, resume)
        settings = _settings(options)
        torch_device = _joined(resolve_device(device))
        main = distributed.is_main()
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed)
        model = build_model(spec)
        # Made (and refused where TensorBoard is missing) before anything is written; rank 0 alone logs.
        board = TensorBoardLog(out / TENSORBOARD) if tensorboard and main else None
        if not resume and main:
            runs.write_json(
                out / runs.CONFIG,
                {"aekit_version": __version__, "options": _jsonable(options), "model": spec.to_dict()},
            )
        history = _trained(
            model, training, settings, dataset, board, out=out, device=torch_device, resume=resume, progress=progress
        )
        metrics = {
            "train_seconds": sum(r["seconds"] for r in history),
            "epochs": len(history),
            "parameters": _parameters(model),
            "batch_size": settings.batch_size,
        }
        if main:
            metrics = _finish_run(out, model, dataset, options, history, metrics, board)
    return model, metrics


def _trained(model, training: Dataset, settings: TrainSettings, dataset: Dataset, board, **how) -> list[dict]:
    """``train(model, training, settings, **how)``, logging to ``board`` (where there is one) the image grids of
    ``dataset`` after every epoch, and closing it if training fails."""
    try:
        return train(
            model,
            training,
            settings,
            on_epoch_end=board and (lambda record: board.log_epoch(record, image_grids(model, dataset))),
            **how,
        )
    except BaseException:
        if board is not None:
            board.close()
        raise


def _checked_spec(out: Path, options: dict, training: Dataset, resume: bool) -> ModelConfig:
    """The model config of ``options`` on the ``training`` data; for a resume, it must be the one the run saved."""
    spec = spec_for(options, training)
    if resume and runs.run_config(runs.read_config(out), out) != spec:
        raise RunError(
            f"{out / runs.CONFIG}: its model settings do not match its options; restore the file or "
            "train the run again without --resume"
        )
    return spec


def _joined(device: torch.device) -> torch.device:
    """``device``, or under torchrun this process's device once every rank has joined the process group."""
    if not distributed.launched_by_torchrun():
        return device
    device = distributed.init_from_env(device)
    # Every rank has validated the options before rank 0 writes the first file.
    torch.distributed.barrier()
    return device


def _finish_run(out: Path, model, dataset: Dataset, options: dict, history: list[dict], metrics: dict, board) -> dict:
    """The end of a trained run (rank 0): its test metrics over ``metrics`` (training's), the TensorBoard log's end,
    the figures, the report and, last, metrics.json; returns the metrics."""
    normal = normal_classes(options["normal_class"])
    metrics = {**evaluate(model, dataset, normal_classes=normal), **metrics}
    if board is not None:
        _finish_board(board, model, dataset, history)
    write_figures(model, dataset, out / FIGURES, label=options["model"], history=history, normal_classes=normal)
    write_run_report(out, metrics)
    # Last: a run folder with metrics.json is a finished one (compare reuses it as it is).
    runs.write_json(out / runs.METRICS, metrics)
    return metrics


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


def evaluate_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "cpu", nll_samples: int | None = None
) -> dict:
    """The metrics of a trained run on its test split, also written to its metrics.json and report.html; with
    ``nll_samples`` = k also the VAE's importance-weighted NLL estimate ``nll_is_{k}``. The registered metrics that
    evaluation does not recompute are kept from its metrics.json (training's time, epochs and size; estimates of
    earlier calls). A run that another process holds (a training) is refused; in a read-only run folder the metrics are
    returned without writing, which a line on stderr says."""
    run_dir = Path(run_dir)
    with runs.RunLock(run_dir, create=False) as lock:
        model, dataset = _load_run(run_dir, data_dir, device)
        previous = runs.read_json(run_dir / runs.METRICS) if (run_dir / runs.METRICS).exists() else {}
        normal = normal_classes(runs.read_config(run_dir)["options"].get("normal_class"))
        metrics = kept(previous, evaluate(model, dataset, nll_samples, normal))
        if lock.writable:
            runs.write_json(run_dir / runs.METRICS, metrics)
            write_run_report(run_dir, metrics)
        else:
            print(
                f"aekit: {run_dir} is read-only, so its {runs.METRICS} and {REPORT} were left as they were",
                file=sys.stderr,
            )
    return metrics


def _load_run(run_dir: Path, data_dir: str | None, device: str) -> tuple[torch.nn.Module, Dataset]:
    """A trained run's model and the data it was trained on (``data_dir`` overriding where mnist is read from)."""
    config = runs.read_config(run_dir)
    options = config.get("options")
    if not isinstance(options, dict) or not set(DATA_OPTIONS) | {"seed"} <= set(options):
        raise RunError(f"{run_dir / runs.CONFIG} does not say which data the run used; train it again")
    model = runs.load(run_dir, resolve_device(device))
    dataset = load_data({**options, **({"data_dir": data_dir} if data_dir else {})})
    expected = tuple(config["model"]["shape"])
    if dataset.shape != expected:
        raise RunError(f"the run expects examples of shape {expected} but the data has {dataset.shape}")
    return model, dataset


def export_projector(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "test",
    max_points: int = MAX_POINTS,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> Path:
    """Write the codes of the first ``max_points`` examples of a run's ``split`` as Embedding Projector files
    (see :mod:`aekit.projector`) into the new folder ``out`` (default: the run's projector/ folder), whole or not
    at all; returns that folder. An existing folder is replaced only with ``overwrite``, the run never
    (:func:`aekit.atomic.check_output`). A run that another process holds (a training) is refused."""
    run_dir = Path(run_dir)
    if split not in ("test", "train"):
        raise AekitError(f"unknown split {split!r}; use test or train")
    if max_points < 1:
        raise AekitError(f"--max-points {max_points} must be at least 1")
    folder = run_dir / PROJECTOR if out is None else Path(out)
    check_folder(folder)
    options = runs.read_config(run_dir).get("options") or {}
    data = _data_paths(options.get("dataset"), options.get("data_dir"), data_dir)
    check_output(folder, overwrite, folder=True, inputs=data, may_hold=(run_dir,))
    with runs.RunLock(run_dir, create=False):
        model, dataset = _load_run(run_dir, data_dir, device)
        x = (dataset.x_test if split == "test" else dataset.x_train)[:max_points]
        y = dataset.y_test if split == "test" else dataset.y_train
        make_folder(folder.parent)
        with atomic_folder(folder, replace=overwrite) as filling:
            write_projector(
                filling,
                codes(model, x),
                None if y is None else y[:max_points],
                as_float32(x) if dataset.is_image else None,
                name=f"{split}_codes",
            )
        return folder


def _data_paths(*given) -> list[str]:
    """The files and folders of data among the options ``given`` (not a dataset's name, "digits" or "mnist")."""
    return [path for path in given if isinstance(path, (str, Path)) and Path(path).exists()]


def write_run_report(run_dir: Path, metrics: dict) -> Path:
    """run_dir/report.html: the run's metrics, its figures (those of :data:`FIGURE_NAMES` it has) and config."""
    config = runs.read_config(run_dir)
    options = config.get("options", {})
    title = f"{config['model'].get('model', 'model')} on {Path(str(options.get('dataset', '?'))).name}: {run_dir}"
    figures = [run_dir / FIGURES / name for name in FIGURE_NAMES if (run_dir / FIGURES / name).is_file()]
    return write_report(run_dir / REPORT, title, config, [{"model": config["model"].get("model"), **metrics}], figures)


def _finish_board(board: TensorBoardLog, model: torch.nn.Module, dataset: Dataset, history: list[dict]) -> None:
    """The end of a TensorBoard log: the test codes as an embedding, then close it."""
    try:
        if model.closed_form:  # fitted without an epoch loop, so nothing called back
            board.log_epoch(history[-1], image_grids(model, dataset))
        x = dataset.x_test[:MAX_POINTS]
        board.log_embedding(
            codes(model, x),
            None if dataset.y_test is None else dataset.y_test[:MAX_POINTS],
            as_float32(x) if dataset.is_image else None,
        )
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
        model, metrics = train_run(
            out / name,
            {"model": name, "code_dim": code_dim, "epochs": epochs, "batch_size": 64},
            device="cpu",
            progress=progress,
        )
        reconstructions[FAMILIES[name].label] = model.reconstruct(originals)
        rows.append({"model": FAMILIES[name].label, **metrics})
    save_rows(
        out / "reconstructions.png",
        reconstructions,
        f"digits test set: originals and reconstructions from a {code_dim}-dimensional code",
    )
    shown = columns(rows)
    cells = [{"model": row["model"], **{key: formatted(key, row.get(key)) for key in shown}} for row in rows]
    table = (
        f"Test split of scikit-learn's digits ({len(dataset.x_test)} images of 8x8, intensities in [0, 1]), "
        f"code size {code_dim}, {epochs} epochs for the auto-encoders.\n\n"
        + legend(shown)
        + "\n"
        + markdown_table(cells, ["model", *shown])
    )
    runs.atomic_write(out / "results.md", table.encode())
    return table


def _jsonable(options: dict) -> dict:
    return {k: _normal(v) for k, v in options.items()}


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
