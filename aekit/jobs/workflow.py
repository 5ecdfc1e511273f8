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

from aekit import __version__
from aekit.atomic import atomic_folder, check_folder, check_not_input, check_output, make_folder
from aekit.data import DATASET_NAMES, Dataset, load_dataset
from aekit.data.dataset import (
    as_float32,
    check_trainable,
    class_numbers,
    normal_class_problem,
    with_normal_training,
)
from aekit.data.identity import data_identity, identity_change, identity_problem
from aekit.errors import AekitError, RunError
from aekit.evaluation import evaluate
from aekit.evaluation.metrics import columns, formatted, kept, legend
from aekit.models import FAMILIES, ModelConfig, build_model, choose_likelihood, model_config
from aekit.models.config import family
from aekit.models.inference import codes
from aekit.report.figures import FIGURE_NAMES, FIGURES, image_grids, showcase, write_figures
from aekit.report.html import REPORT, write_report
from aekit.report.plots import markdown_table, save_rows
from aekit.report.projector import MAX_POINTS, write_projector
from aekit.report.tensorboard import TensorBoardLog
from aekit.training import distributed, run_folder
from aekit.training.settings import (
    TrainSettings,
    as_saved,
    changed_on_resume,
    checked,
    defaults,
    for_family,
    mistyped,
    normal_classes,
    older_run_defaults,
    refuse_foreign,
    resumed,
    train_settings,
)
from aekit.training.trainer import check_model_fits, resolve_device, train

# The fewest optimizer steps an epoch should have: a default batch larger than the data allows is made smaller.
MIN_STEPS_PER_EPOCH = 10
# The options that say where a run's data is and how it is split.
_READ_DATA = ("dataset", "data_dir", "seed", "test_fraction")
TENSORBOARD, PROJECTOR = "tensorboard", "projector"


def load_data(options: dict) -> Dataset:
    return load_dataset(
        options["dataset"],
        data_dir=options["data_dir"],
        seed=options["seed"],
        test_fraction=options["test_fraction"],
        patch=options.get("patch"),  # a run's config.json from before --patch existed has none
        label_column=options.get("label_column"),  # nor one from before --label-column
    )


def training_data(options: dict, dataset: Dataset) -> Dataset:
    """What a run trains on: ``dataset``, or with ``normal_class`` its training split's examples of those classes
    (the test split keeps them all)."""
    classes = normal_classes(options["normal_class"])
    return dataset if classes is None else with_normal_training(dataset, classes)


def _numbered(out: Path, options: dict, given: dict, dataset: Dataset, resume: bool) -> dict:
    """``options`` with ``normal_class`` as label numbers of ``dataset`` (names numbered, see :func:`class_numbers`),
    as config.json records them. A resumed run keeps its saved classes, which a given ``normal_class`` must name too,
    and is refused before any training where they cannot be measured on its data (:func:`_finishable`)."""
    if not resume:
        classes = normal_classes(options["normal_class"])
        return options if classes is None else {**options, "normal_class": class_numbers(dataset, classes)}
    saved = normal_classes(options["normal_class"])
    asked = normal_classes(given.get("normal_class"))
    if asked is not None and class_numbers(dataset, asked) != saved:
        raise _changed(out, ["normal_class"])
    _finishable(out, dataset, saved)
    return options


def _finishable(run_dir: Path, dataset: Dataset, classes: tuple[int, ...] | None) -> None:
    """Refuse, in one line saying what to do, a run trained on ``classes`` whose AUROC cannot be measured on
    ``dataset`` (:func:`normal_class_problem`): a run made before aekit checked that before training trained to its
    end and failed there, and can be neither finished nor evaluated."""
    problem = None if classes is None else normal_class_problem(dataset, classes)
    if problem:
        raise RunError(f"{run_dir} cannot be finished or evaluated: {problem} (in a new run, in another --out)")


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
    to learn more than the mean. A batch size the user gave is kept. Patch training draws ``patches_per_epoch``
    crops an epoch."""
    n = len(dataset.x_train) if dataset.photos is None else options["patches_per_epoch"]
    if "batch_size" in given or math.ceil(n / options["batch_size"]) >= MIN_STEPS_PER_EPOCH:
        return options
    return {**options, "batch_size": max(1, n // MIN_STEPS_PER_EPOCH)}


def _resolve_options(out: Path, given: dict, resume: bool, replace_config: bool = False) -> dict:
    """The options of the run in ``out``: ``given`` over the defaults (of the family they name), or for a resume the
    saved options with the ``given`` ones that may change on a resume (the others must equal the saved; the rules of
    each option: :mod:`aekit.training.settings`)."""
    known = defaults()
    unknown = set(given) - set(known)
    if unknown:
        raise AekitError(f"unknown options {sorted(unknown)}; known: {', '.join(sorted(known))}")
    if given.get("normal_class") is not None:
        normal_classes(given["normal_class"])  # checked before anything; numbered on the data by _numbered
    if resume:  # the classes given are compared with the saved ones once the data has numbered them
        given = {k: v for k, v in given.items() if k != "normal_class"}
    if not resume:
        # A folder with no checkpoint holds nothing to resume (see run_folder.holds_run): the run starts there again.
        if run_folder.holds_run(out) and not replace_config:
            raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
        options = {**known, **given}
        family(options["model"])
        refuse_foreign(given, options["model"])
        checked(options)
        return for_family(_absolute(options))
    saved = run_folder.read_config(out).get("options")
    if not run_folder.holds_run(out):
        raise run_folder.no_checkpoint(out)
    if not isinstance(saved, dict) or not set(saved) <= set(known) or saved.get("model") not in FAMILIES:
        raise RunError(f"{out / run_folder.CONFIG} has no usable options section; train the run again without --resume")
    wrong = mistyped(saved)
    if wrong:
        raise RunError(
            f"{out / run_folder.CONFIG}: saved options of the wrong kind: {', '.join(wrong)}; restore the "
            "file or train the run again without --resume"
        )
    # Options added to aekit after the run was made take what it was trained with.
    saved = for_family({**known, **older_run_defaults(), **saved})
    refuse_foreign({k: v for k, v in given.items() if k != "model"}, saved["model"])
    changed = changed_on_resume(saved, given)
    if changed:
        raise _changed(out, changed)
    options = resumed(saved, given)
    checked(options)
    return _absolute(options) if "dataset" in given else options


def _absolute(options: dict) -> dict:
    """``options`` with the path of a dataset that exists made absolute, as config.json records it."""
    if options["data_dir"] is None and Path(options["dataset"]).exists():
        return {**options, "dataset": str(Path(options["dataset"]).resolve())}
    return options


def _changed(out: Path, names: list[str]) -> AekitError:
    """The refusal to resume the run in ``out`` with other values of the options ``names`` than it was trained with."""
    return AekitError(
        f"the run in {out} was trained with other settings for {', '.join(names)}; drop those options to resume it, "
        "or start a new run in another --out"
    )


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
    anything in it is looked at (:class:`aekit.training.run_folder.RunLock`), so of several processes pointed at one
    ``out`` one proceeds and the others are refused. A resume rewrites the weights and history from the checkpoint and
    then writes the metrics, figures and report, so it also finishes a run whose epochs were done when it failed.
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
            resume = (out / run_folder.CHECKPOINT).exists()
        options, dataset, training = _prepared(out, dict(given or {}), resume, restarted)
        spec = _checked_spec(out, options, training, resume)
        settings = train_settings(options)
        torch_device = _joined(resolve_device(device))
        check_model_fits(spec, torch_device)
        main = distributed.is_main()
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed)
        model = build_model(spec)
        # Made (and refused where TensorBoard is missing) before anything is written; rank 0 alone logs.
        board = TensorBoardLog(out / TENSORBOARD) if tensorboard and main else None
        if not resume and main:
            run_folder.write_json(out / run_folder.CONFIG, _config(options, spec, dataset))
        elif main:
            _record_place(out, options["dataset"])
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
            if resume:  # once the epochs are trained: a resume refused or failed leaves config.json as it was
                _record_changes(out, options)
            metrics = _finish_run(out, model, dataset, options, history, metrics, board)
    return model, metrics


def _config(options: dict, spec: ModelConfig, dataset: Dataset) -> dict:
    """A new run's config.json: the version, its options, its model and the identity of its data."""
    return {
        "aekit_version": __version__,
        "options": _jsonable(options),
        "model": spec.to_dict(),
        "data": data_identity(dataset),
    }


def _prepared(out: Path, given: dict, resume: bool, restarted: bool) -> tuple[dict, Dataset, Dataset]:
    """The resolved options of the run in ``out``, its data and what it trains on, with every check of them that
    can be made before training made."""
    options = _resolve_options(out, given, resume, replace_config=restarted)
    if resume:
        dataset = _run_data(out, run_folder.read_config(out), options, f"aekit train --resume --out {out}")
    else:
        dataset = load_data(options)
        _refuse_split_options(given, dataset)
    options = _numbered(out, options, given, dataset, resume)
    training = training_data(options, dataset)
    if not resume:
        check_trainable(training)
        options = fit_batch(options, given, training)
    return options, dataset, training


def _refuse_split_options(given: dict, dataset: Dataset) -> None:
    """Refuse a test fraction given for a store, which keeps the split it was packed with (``seed`` still seeds the
    weights and the data's order)."""
    if "test_fraction" in given and dataset.store_id is not None:
        raise AekitError(
            f"--test-fraction {given['test_fraction']}: a store keeps the split it was packed with; drop "
            "--test-fraction, or pack the source again with it (`aekit pack SOURCE --out STORE --test-fraction F`)"
        )


def _run_data(run_dir: Path, config: dict, options: dict, command: str) -> Dataset:
    """The data of the run in ``run_dir`` (read by ``options``: its saved ones, or with a new place given), refused
    in one line where it is gone or is not the data config.json's ``data`` records, naming what changed. A run made
    before aekit recorded its data's identity is read from where it was, unchecked. ``command`` (e.g. ``aekit
    evaluate RUN``) is how the run is pointed at the data's new place, for the message where it is gone."""
    recorded = recorded_identity(run_dir, config)
    path, saved = options["dataset"], config["options"].get("dataset")
    if recorded is None and path != saved:
        raise RunError(
            f"{run_dir / run_folder.CONFIG} does not record which data the run was trained on (it predates aekit doing "
            f"so), so {path} cannot be checked against it; drop --dataset to use {saved}, or train a new run"
        )
    if path not in DATASET_NAMES and not Path(path).exists():
        store = f" (store {recorded['store_id']})" if recorded and recorded["store_id"] else ""
        raise RunError(
            f"{path}, the data the run in {run_dir} was trained on{store}, is gone (moved or deleted); point the run "
            f"at its new place with `{command} --dataset NEWPATH`"
        )
    dataset = load_data(options)
    change = None if recorded is None else identity_change(recorded, data_identity(dataset))
    if change:
        raise RunError(
            f"the data in {path} {change}; point the run at the data it was trained on with --dataset, or train a "
            "new run on this data"
        )
    return dataset


def recorded_identity(run_dir: Path, config: dict | None = None) -> dict | None:
    """The identity of the data the run in ``run_dir`` was trained on (config.json's ``data``, see
    :mod:`aekit.data.identity`), or None for a run made before aekit recorded one; ``config``: the run's, if read."""
    config = run_folder.read_config(run_dir) if config is None else config
    recorded = config.get("data")
    problem = None if recorded is None else identity_problem(recorded)
    if problem:
        raise RunError(f"{run_dir / run_folder.CONFIG}: its data section {problem}; restore the file or train again")
    return recorded


def _record_place(run_dir: Path, path: str) -> None:
    """Record in the run's config.json that its data (checked by :func:`_run_data`) now lies at ``path``, where that
    changed, so later commands find it there; a line on stderr says so."""
    config = run_folder.read_config(run_dir)
    if config["options"].get("dataset") == path:
        return
    run_folder.write_json(run_dir / run_folder.CONFIG, {**config, "options": {**config["options"], "dataset": path}})
    print(f"aekit: the run in {run_dir} now reads its data from {path}", file=sys.stderr)


def _record_changes(run_dir: Path, options: dict) -> None:
    """Record in a resumed run's config.json the options the resume changed (a raised --epochs, another --data-on),
    so that it says how the run was trained to the end."""
    config = run_folder.read_config(run_dir)
    saved = config["options"]
    changed = {k: as_saved(v) for k, v in options.items() if k in saved and as_saved(v) != saved[k]}
    if changed:
        run_folder.write_json(run_dir / run_folder.CONFIG, {**config, "options": {**saved, **changed}})


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
    if resume and run_folder.run_config(run_folder.read_config(out), out) != spec:
        raise RunError(
            f"{out / run_folder.CONFIG}: its model settings do not match its options; restore the file or "
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
    run_folder.write_json(out / run_folder.METRICS, metrics)
    return metrics


@contextlib.contextmanager
def _exclusive(out: Path, create: bool):
    """Hold ``out``'s lock for the block; under torchrun rank 0 alone does (the ranks have not joined yet, so RANK
    names it). A block that fails before the folder holds a run removes the folder if the lock made it, so a
    mistake leaves nothing behind; elsewhere what is left is no run (run_folder.holds_run) and the same command
    retries."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    with run_folder.RunLock(out, create=create) as lock:
        try:
            yield
        except BaseException:
            if lock.created and not run_folder.holds_run(out):
                shutil.rmtree(out, ignore_errors=True)
            raise


def evaluate_run(
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    nll_samples: int | None = None,
    dataset: str | Path | None = None,
) -> dict:
    """The metrics of a trained run on its test split, also written to its metrics.json and report.html; with
    ``nll_samples`` = k also the VAE's importance-weighted NLL estimate ``nll_is_{k}``. The registered metrics that
    evaluation does not recompute are kept from its metrics.json (training's time, epochs and size; estimates of
    earlier calls). ``dataset`` points the run at its data's new place (see :func:`_load_run`). A run that another
    process holds (a training) is refused; in a read-only run folder the metrics are returned without writing, which
    a line on stderr says."""
    run_dir = Path(run_dir)
    with run_folder.RunLock(run_dir, create=False) as lock:
        model, dataset = _load_run(run_dir, data_dir, device, dataset, lock.writable, f"aekit evaluate {run_dir}")
        previous = run_folder.read_json(run_dir / run_folder.METRICS) if (run_dir / run_folder.METRICS).exists() else {}
        normal = normal_classes(run_folder.read_config(run_dir)["options"].get("normal_class"))
        _finishable(run_dir, dataset, normal)
        metrics = kept(previous, evaluate(model, dataset, nll_samples, normal))
        if lock.writable:
            run_folder.write_json(run_dir / run_folder.METRICS, metrics)
            write_run_report(run_dir, metrics)
        else:
            print(
                f"aekit: {run_dir} is read-only, so its {run_folder.METRICS} and {REPORT} were left as they were",
                file=sys.stderr,
            )
    return metrics


def _load_run(
    run_dir: Path, data_dir: str | None, device: str, place: str | Path | None, writable: bool, command: str
) -> tuple[torch.nn.Module, Dataset]:
    """A trained run's model and the data it was trained on (:func:`_run_data`; ``data_dir`` overriding where mnist
    is read from). ``place`` points the run at its data's new place: the data there must be the run's, and where
    ``writable`` the run's config.json records the place."""
    config = run_folder.read_config(run_dir)
    options = config.get("options")
    if not isinstance(options, dict) or not set(_READ_DATA) <= set(options):
        raise RunError(f"{run_dir / run_folder.CONFIG} does not say which data the run used; train it again")
    model = run_folder.load(run_dir, resolve_device(device))
    options = {**options, **({"data_dir": data_dir} if data_dir else {})}
    if place is not None:
        options = _absolute({**options, "dataset": str(place)})
    dataset = _run_data(run_dir, config, options, command)
    if writable:
        _record_place(run_dir, options["dataset"])
    expected = tuple(config["model"]["shape"])
    if dataset.shape != expected:
        raise RunError(f"the run expects examples of shape {expected} but the data has {dataset.shape}")
    return model, dataset


def held_out(run_dir: str | Path, count: int) -> np.ndarray | None:
    """The first ``count`` test examples of the data the run in ``run_dir`` was trained on, as the model takes them
    (float32), or None where that data is not here to read (moved, deleted, never on this machine, or not the run's
    any more): what a check of the run's model on examples it did not train on uses where it can."""
    run_dir = Path(run_dir)
    config = run_folder.read_config(run_dir)
    options = config.get("options")
    if not isinstance(options, dict) or not set(_READ_DATA) <= set(options):
        return None
    try:
        dataset = _run_data(run_dir, config, options, f"aekit export {run_dir}")
    except (AekitError, OSError):
        return None
    if list(dataset.shape) != config["model"].get("shape"):
        return None
    return as_float32(dataset.x_test[:count])


def export_projector(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "test",
    max_points: int = MAX_POINTS,
    data_dir: str | None = None,
    device: str = "cpu",
    dataset: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the codes of the first ``max_points`` examples of a run's ``split`` as Embedding Projector files
    (see :mod:`aekit.report.projector`) into the new folder ``out`` (default: the run's projector/ folder), whole or not
    at all; returns that folder. An existing folder is replaced only with ``overwrite``, the run never
    (:func:`aekit.atomic.check_output`). ``dataset`` points the run at its data's new place (see :func:`_load_run`).
    A run that another process holds (a training) is refused."""
    run_dir = Path(run_dir)
    if split not in ("test", "train"):
        raise AekitError(f"unknown split {split!r}; use test or train")
    if max_points < 1:
        raise AekitError(f"--max-points {max_points} must be at least 1")
    folder = run_dir / PROJECTOR if out is None else Path(out)
    check_folder(folder)
    options = run_folder.read_config(run_dir).get("options") or {}
    data = _data_paths(options.get("dataset"), options.get("data_dir"), data_dir, dataset)
    check_output(folder, overwrite, folder=True, inputs=data, may_hold=(run_dir,))
    with run_folder.RunLock(run_dir, create=False) as lock:
        model, dataset = _load_run(
            run_dir, data_dir, device, dataset, lock.writable, f"aekit export-projector {run_dir}"
        )
        if not model.gives_codes:
            raise AekitError(f"{run_dir} gives no codes to project (its model restores images); use another run")
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
    config = run_folder.read_config(run_dir)
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
        if not model.gives_codes:
            return
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
    run_folder.atomic_write(out / "results.md", table.encode())
    return table


def _jsonable(options: dict) -> dict:
    return {k: as_saved(v) for k, v in options.items()}


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
