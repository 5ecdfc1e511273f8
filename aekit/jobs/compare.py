"""``aekit compare``: one model of each kind on the same split and at the same code size, side by side.

For every code size and model, a run folder in the runs folder (``OUT/runs`` unless ``runs_dir`` names another) is
trained through :func:`aekit.jobs.workflow.train_run`, or reused when the runs folder already holds a finished run of
that model and code size on the same split (and with every option asked for here), or resumed where it holds such a
run unfinished. Then OUT gets:

- ``comparison.md`` and ``comparison.csv``: one row per model (and code size) with the metrics of DESIGN.md; the best
  of each column (lowest error, time and size, highest probe accuracy) is bold in the Markdown and named in the
  CSV's ``best_in`` column;
- ``figures/comparison.png``: the same test examples as originals and as each model's reconstruction and, for
  images, a noisy copy of them and each model's output for it; with several code sizes, one
  ``figures/comparison-N.png`` per size and ``figures/sweep.png``, the reconstruction error against the code size;
  with several rate weights (``rate_lambdas``, the models whose config has ``rate_lambda``), one row per model and
  weight and ``figures/rate_distortion.png``, each model's squared error against its rate, one curve per model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from aekit.atomic import atomic_write, check_folder, make_folder
from aekit.data import Dataset
from aekit.data.dataset import class_numbers
from aekit.data.identity import data_identity, identity_change
from aekit.errors import AekitError, RunError
from aekit.evaluation.metrics import columns, formatted, legend, lookup
from aekit.jobs.workflow import evaluate_run, load_data, recorded_identity, spec_for, train_run
from aekit.models import FAMILIES, build_model, corrupt
from aekit.models.config import coding_families, family
from aekit.naming import flag
from aekit.report.figures import FIGURES, showcase
from aekit.report.plots import markdown_table, save_lines, save_rows, save_tradeoffs
from aekit.training import run_folder
from aekit.training.settings import defaults, for_family, normal_classes

# The options that fix the split: a reused run must agree on them (and on its model and code size).
_SPLIT = ("dataset", "seed", "test_fraction", "normal_class")
# The model option a sweep of rate weights sets: a family weighs a rate where its config declares it.
RATE = "rate_lambda"
# What a comparison does with each run (see _place).
TRAIN, RESUME, REUSE = "train", "resume", "reuse"


def compare(
    out: str | Path,
    *,
    models: tuple[str, ...] | None = None,
    code_dims: tuple[int, ...] = (10,),
    rate_lambdas: tuple[float, ...] | None = None,
    options: dict | None = None,
    runs_dir: str | Path | None = None,
    nll_samples: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> str:
    """Train (or reuse) each of ``models`` (default: every registered family that gives codes) at each of
    ``code_dims`` with the ``options`` (as for ``aekit train``: dataset, epochs, hidden, ...; a model option applies to
    the families that have it), write the comparison into ``out`` and return its Markdown.

    ``rate_lambdas`` sweeps the rate weight instead, at one code size: each of ``models`` (default: every family that
    gives codes and weighs a rate, :func:`weighs_rate`; a family that does not is refused) at each weight.

    Everything is checked before anything is trained or written. ``nll_samples`` = k adds the VAE's
    importance-weighted NLL estimate ``nll_is_{k}``.
    """
    out = Path(out)
    runs_dir = Path(runs_dir) if runs_dir is not None else out / "runs"
    if models is None:
        models = tuple(m for m in coding_families() if rate_lambdas is None or weighs_rate(m))
    points = _points(code_dims, rate_lambdas)
    given, dataset = _check(models, code_dims, rate_lambdas, points, dict(options or {}), nll_samples, (out, runs_dir))
    identity = data_identity(dataset)
    plan = {(model, i): _place(runs_dir, model, p, given, identity) for i, p in enumerate(points) for model in models}
    settings = {**defaults(), **given}

    rows = []
    originals = showcase(dataset)
    noisy = _noisy(originals, settings["noise"], settings["noise_level"]) if dataset.is_image else None
    # Per code size, the reconstructions of the originals and of their noisy copy by each model (at each weight).
    pictures = {dim: ({"original": originals}, {} if noisy is None else {"noisy input": noisy}) for dim in code_dims}
    for i, point in enumerate(points):
        shown, shown_noisy = pictures[point["code_dim"]]
        for model_name in models:
            folder, action = plan[model_name, i]
            label = FAMILIES[model_name].label
            metrics = _metrics_of(folder, action, {**given, "model": model_name}, point, nll_samples, device, progress)
            model = run_folder.load(folder)
            caption = label if RATE not in point else f"{label}, lambda {point[RATE]}"
            shown[caption] = model.reconstruct(originals)
            if noisy is not None:
                shown_noisy[f"{caption} (noisy in)"] = model.reconstruct(noisy)
            # A model fitted in closed form has no epochs and no batches to speak of.
            unbatched = {"epochs": None, "batch_size": None} if model.closed_form else {}
            rows.append(
                {"model": label, **point, **metrics, **unbatched, "run": str(folder), "reused": action == REUSE}
            )

    make_folder(out)
    _save_figures(out, pictures, rows, models, rate_lambdas, dataset.name, settings if noisy is not None else None)
    return _write_tables(out, rows, dataset, settings, code_dims, rate_lambdas)


def _points(code_dims: tuple[int, ...], rate_lambdas: tuple[float, ...] | None) -> list[dict]:
    """Each point of the sweep: the options that set it, for every model."""
    return [
        {"code_dim": dim, **({} if lam is None else {RATE: lam})}
        for dim in code_dims
        for lam in rate_lambdas or (None,)
    ]


def _save_figures(out: Path, pictures: dict, rows: list[dict], models, rate_lambdas, data_name: str, noise) -> None:
    """The reconstructions of each code size (``pictures``), and the sweep's figure of the code sizes or the rate
    weights; ``noise``: the settings of the noise added to the shown examples, None where none was."""
    for dim, (shown, shown_noisy) in pictures.items():
        name = "comparison.png" if len(pictures) == 1 else f"comparison-{dim}.png"
        title = f"{data_name} test set, code size {dim}: originals and each model's reconstruction" + (
            f"; then the same with {noise['noise']} noise ({noise['noise_level']:g}) added" if noise else ""
        )
        save_rows(out / FIGURES / name, {**shown, **shown_noisy}, title)
    if len(pictures) > 1:
        _save_sweep(out / FIGURES / "sweep.png", rows, models, sorted(pictures), data_name)
    if rate_lambdas is not None:
        _save_rate_distortion(out / FIGURES / "rate_distortion.png", rows, models, data_name)


def weighs_rate(model: str) -> bool:
    """Whether family ``model`` trains for rate and distortion: its config declares the rate weight."""
    return any(f.name == RATE for f in family(model).options())


def _save_sweep(path: Path, rows: list[dict], models, dims: list[int], data_name: str) -> None:
    """The figure of each model's squared error per test example against the code size."""
    by = {(row["model"], row["code_dim"]): row["sse_per_example"] for row in rows}
    save_lines(
        path,
        dims,
        {FAMILIES[m].label: [by[FAMILIES[m].label, d] for d in dims] for m in models},
        "code size",
        "squared error per test example",
        f"{data_name}: reconstruction error against code size",
    )


def _save_rate_distortion(path: Path, rows: list[dict], models, data_name: str) -> None:
    """The figure of each model's squared error per element against its rate, one point per rate weight: the rate in
    bits per pixel where every run reports it (images), else in bits per example."""
    per_pixel = all(row.get("bits_per_pixel") is not None for row in rows)
    rate = "bits_per_pixel" if per_pixel else "rate_bits_per_example"
    labels = [FAMILIES[m].label for m in models]
    save_tradeoffs(
        path,
        {label: [(row[rate], row["mse"], str(row[RATE])) for row in rows if row["model"] == label] for label in labels},
        "rate, bits per pixel of the test images" if per_pixel else "rate, bits per test example",
        "squared error per element (mse)",
        f"{data_name}: distortion against rate, a point per rate weight lambda",
    )


def _metrics_of(
    folder: Path, action: str, given: dict, point: dict, nll_samples: int | None, device: str, progress: bool
) -> dict:
    """The metrics of the run in ``folder`` of the ``given`` options (the model included) at the sweep's ``point``:
    those it holds where it is reused, else those of training or resuming it there (``action``, see :func:`_place`);
    with ``nll_samples`` = k and a VAE, evaluated again where they lack ``nll_is_{k}``."""
    given = {**given, **point}
    if action == REUSE:
        metrics = run_folder.read_json(folder / run_folder.METRICS)
    else:
        resume = action == RESUME
        if progress:
            print(f"{'resuming' if resume else 'training'} {given['model']}, {_words(point)} ...", flush=True)
        _, metrics = train_run(folder, for_family(given), resume=resume, device=device, progress=progress)
    if (
        nll_samples is not None
        and family(given["model"]).model_class.variational
        and f"nll_is_{nll_samples}" not in metrics
    ):
        metrics = evaluate_run(folder, data_dir=given.get("data_dir"), device=device, nll_samples=nll_samples)
    return metrics


def _check(models, code_dims, rate_lambdas, points, given: dict, nll_samples, folders) -> tuple[dict, Dataset]:
    """The options with the dataset path made absolute, and the data; raises before anything is written, also where
    one of the ``folders`` to write cannot be or a model cannot be built at one of the sweep's ``points``."""
    problems = []
    unknown = [m for m in models if m not in FAMILIES]
    if not models or unknown:
        problems.append(f"unknown models {unknown}" if unknown else "no models to compare")
    if len(set(models)) != len(models):
        problems.append(f"models {list(models)} name one twice")
    if not code_dims or min(code_dims) < 1 or len(set(code_dims)) != len(code_dims):
        problems.append(f"code sizes {list(code_dims)} must be distinct positive integers")
    if nll_samples is not None and nll_samples < 1:
        problems.append(f"--nll-samples {nll_samples} must be at least 1")
    known = defaults()
    not_options = set(given) - set(known) | set(given) & {"model", "code_dim"}
    if not_options:
        problems.append(f"options {sorted(not_options)} cannot be set for a comparison")
    if problems:
        problems[-1] += f"; compare any of {', '.join(FAMILIES)} at distinct code sizes"
    if rate_lambdas is not None:
        problems += _sweep_problems(models, code_dims, rate_lambdas, given)
    if problems:
        raise AekitError("; ".join(problems))
    if given.get("data_dir") is None and Path(given.get("dataset", known["dataset"])).exists():
        given["dataset"] = str(Path(given["dataset"]).resolve())  # as train_run stores it, so runs can be matched
    options = {**known, **given}
    dataset = load_data(options)
    if given.get("normal_class") is not None:  # numbered on the data, as train_run records them
        given["normal_class"] = list(class_numbers(dataset, normal_classes(given["normal_class"])))
    for point in points:
        for model in models:
            build_model(spec_for(for_family({**options, "model": model, **point}), dataset))
    for folder in folders:
        check_folder(folder)
    return given, dataset


def _sweep_problems(models, code_dims, rate_lambdas, given: dict) -> list[str]:
    """What is wrong with a sweep of the rate weights ``rate_lambdas``, each problem with its fix."""
    problems = []
    lambdas = list(rate_lambdas)
    if not lambdas or not all(0 <= lam < math.inf for lam in lambdas) or len(set(lambdas)) != len(lambdas):
        problems.append(
            f"rate weights {lambdas} must be distinct finite numbers >= 0, e.g. --rate-lambdas 0.002,0.006,0.015"
        )
    if len(code_dims) > 1:
        problems.append("a comparison sweeps code sizes or rate weights, not both: give one --code-dim")
    if RATE in given:
        problems.append("--rate-lambda and --rate-lambdas both set the rate weight: give one of them")
    unweighted = [m for m in models if m in FAMILIES and not weighs_rate(m)]
    if unweighted:
        weighted = ", ".join(m for m in FAMILIES if weighs_rate(m))
        problems.append(
            f"--rate-lambdas sweeps the rate weight of {weighted}, not of {', '.join(unweighted)}, which have none: "
            "drop them from --models"
        )
    return problems


def _place(runs_dir: Path, model: str, point: dict, given: dict, identity: dict) -> tuple[Path, str]:
    """Where the run of ``model`` at the sweep's ``point`` (its code size, and rate weight in a sweep of them) lives
    and what to do there: TRAIN it, RESUME it or REUSE it (already trained there).

    A run is reused when its model, point and split match and so does every option asked for (PCA is fitted
    in closed form, so for it only the split counts), and resumed from its last checkpoint where it is unfinished (a
    comparison killed while training it goes on where it stopped); one that records other data than ``identity``
    (the data's now, :func:`aekit.data.identity.data_identity`) is refused."""
    known = defaults()
    wanted = {"model": model, **point, **{k: given.get(k, known[k]) for k in _SPLIT}}
    if not family(model).model_class.closed_form:
        wanted.update({k: v for k, v in for_family({**given, "model": model}).items() if k != "data_dir"})
    matches, options = [], []
    for config_path in sorted(runs_dir.glob(f"*/{run_folder.CONFIG}")) if runs_dir.is_dir() else []:
        saved = run_folder.read_config(config_path.parent).get("options") or {}
        if all(_plain(saved.get(k)) == _plain(v) for k, v in wanted.items()):
            matches.append(config_path.parent)
            options.append(saved)
    if len(matches) > 1:
        # The options not given that tell them apart (e.g. the rate weight of a sweep's runs), to choose one by.
        differ = sorted(k for k in set().union(*options) - {"data_dir"} if len({repr(o.get(k)) for o in options}) > 1)
        raise RunError(
            f"{', '.join(map(str, matches))} all hold a {model} run of {_words(point)} on this split; choose one "
            f"with {' or '.join(map(flag, differ)) or 'the option that sets it'}, or keep one of them in the runs "
            "folder"
        )
    if matches and not run_folder.holds_run(matches[0]):
        return matches[0], TRAIN  # what a run left that failed before its first checkpoint: train it there again
    recorded = recorded_identity(matches[0]) if matches else None
    change = None if recorded is None else identity_change(recorded, identity)
    if change:
        raise RunError(
            f"{matches[0]} holds a {model} run of {_words(point)} trained on other data: the data in "
            f"{given.get('dataset', known['dataset'])} {change}; remove it or choose another --runs folder"
        )
    if matches:
        if (matches[0] / run_folder.METRICS).is_file():
            return matches[0], REUSE
        if (matches[0] / run_folder.CHECKPOINT).is_file():
            return matches[0], RESUME
        raise RunError(
            f"{matches[0]} holds an unfinished {model} run; finish it with `aekit train --resume "
            f"--out {matches[0]}` or remove it"
        )
    folder = runs_dir / (f"{model}-{point['code_dim']}" + (f"-lambda{point[RATE]}" if RATE in point else ""))
    if run_folder.holds_run(folder):
        raise RunError(
            f"{folder} already holds something other than a {model} run of {_words(point)} with these "
            "settings; remove it or choose another --runs folder"
        )
    return folder, TRAIN


def _words(point: dict) -> str:
    """The sweep's ``point`` in words: "code size 5" or "code size 5, rate lambda 0.002"."""
    return f"code size {point['code_dim']}" + (f", rate lambda {point[RATE]}" if RATE in point else "")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _noisy(originals: np.ndarray, noise: str, level: float) -> np.ndarray:
    """The shown test examples with the denoising auto-encoder's corruption, drawn with a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return corrupt(torch.from_numpy(originals), noise, level).numpy()


def _write_tables(out: Path, rows: list[dict], dataset: Dataset, options: dict, code_dims, rate_lambdas) -> str:
    """Write comparison.csv and comparison.md: a column per registered metric some row has
    (:mod:`aekit.evaluation.metrics`), the best of each marked; returns the Markdown."""
    metrics = columns(rows)
    best = _best(rows, metrics)
    keys = ["model", "code_dim", *([RATE] if rate_lambdas is not None else []), *metrics, "run", "reused"]
    run_folder.write_csv(
        out / "comparison.csv",
        [{**{k: row.get(k) for k in keys}, "best_in": ";".join(marked)} for row, marked in zip(rows, best)],
    )
    table = _markdown(rows, metrics, best, dataset, options, code_dims, rate_lambdas)
    atomic_write(out / "comparison.md", table.encode())
    return table


def _best(rows: list[dict], metrics: list[str]) -> list[list[str]]:
    """For each row, the metrics in which it is best among the rows of its code size (and rate weight), by which way
    each metric is better (only where two or more rows have a value, so a metric only one model has marks nothing; an
    unranked metric, such as epochs, marks nothing)."""
    best: list[list[str]] = [[] for _ in rows]
    point = [(row["code_dim"], row.get(RATE)) for row in rows]
    for name in metrics:
        larger = lookup(name).higher_is_better
        for group in set(point):
            values = {i: row[name] for i, row in enumerate(rows) if point[i] == group and row.get(name) is not None}
            if larger is None or len(values) < 2:
                continue
            target = (max if larger else min)(values.values())
            for i, value in values.items():
                if value == target:
                    best[i].append(name)
    return best


def _markdown(rows, metrics: list[str], best, dataset: Dataset, options: dict, code_dims, rate_lambdas) -> str:
    cells = []
    for row, marked in zip(rows, best):
        line = {"model": row["model"], "code_dim": str(row["code_dim"]), RATE: str(row.get(RATE))}
        for name in metrics:
            text = formatted(name, row.get(name))
            line[name] = f"**{text}**" if name in marked else text
        cells.append(line)
    reused = [row["run"] for row in rows if row["reused"]]
    sizes = ", ".join(map(str, code_dims))
    if rate_lambdas is not None:
        sizes += f", rate weights lambda {', '.join(map(str, rate_lambdas))}"
    # The batch each run used (a default one is fitted to small data), not the option's default.
    batches = sorted({row["batch_size"] for row in rows if row.get("batch_size")})
    batch = ", ".join(map(str, batches)) or options["batch_size"]
    header = (
        f"{dataset.name}: {len(dataset.x_train)} training and {len(dataset.x_test)} test examples of shape "
        f"{'x'.join(map(str, dataset.shape))}; code size {sizes}; {options['net']} networks, "
        f"{options['epochs']} epochs of batch {batch} for the neural models (seed {options['seed']}).\n\n"
        "Metrics on the test split, in the data's own units; the best of each column (per code size"
        + (" and rate weight" if rate_lambdas is not None else "")
        + ") in bold:\n\n"
        + legend(metrics)
        + "\n"
    )
    if reused:
        header += f"Reused runs (trained earlier, their own settings): {', '.join(reused)}.\n\n"
    names = ["model"] + (["code_dim"] if len(code_dims) > 1 else []) + ([RATE] if rate_lambdas is not None else [])
    names += metrics
    return header + markdown_table(cells, names)
