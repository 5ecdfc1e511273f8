"""Anomaly detection on tables: ADBench's unsupervised protocol (Han et al., NeurIPS 2022), written to
bench/RESULTS.md ("## Anomaly detection: ADBench tables") and bench/results/adbench.json.

Each data set is an ``.npz`` holding ``X`` (rows) and ``y`` (1 an anomaly, 0 a normal row). Every detector is fitted on
all of X without y and scores every row; AUROC and AUPRC (scikit-learn's roc_auc_score and average_precision_score)
of the scores against y. Side by side, each at its defaults, on X as stored:

  aekit AE, aekit VAE   aekit's AutoEncoderOutlierDetector and VariationalAutoEncoderOutlierDetector, -score_samples
  aekit AE x3 codes     AutoEncoderOutlierDetector(n_components=(2, 4, 8)): the mean of the scores of three detectors
                        of codes of 2, 4 and 8 values (at most columns - 1), an ensemble
  aekit AE early stopping  AutoEncoderOutlierDetector(early_stopping=True): the weights of the epoch of least loss on
                        the tenth of the rows it holds out (measured to see whether early stopping pays)
  aekit PCA             aekit's PCA (the detectors' default code size for the table, standardized features,
                        Gaussian likelihood), its reconstruction NLL
  IsolationForest       scikit-learn's, -score_samples
  OneClassSVM           scikit-learn's, fitted on at most --ocsvm-rows rows drawn at random (its cost grows with the
                        square of the rows), -decision_function of every row
  LocalOutlierFactor    scikit-learn's (novelty=False), -negative_outlier_factor_ of the fitted rows
  ECOD, COPOD, KNN, HBOS, PyOD AutoEncoder, PyOD VAE, PyOD DeepSVDD
                        PyOD's, decision_scores_ of the fitted rows, where the pyod package is installed

LocalOutlierFactor and KNN are skipped on tables of more than --neighbour-rows rows (a neighbour search over all
rows). A fit and score that runs past --max-seconds is stopped and saved as capped; a rerun measures it again only
with a longer cap. Each (data set, method, seed) result is saved as it is made, so a rerun goes on where one stopped,
and the section is drawn from every result saved.

    python -m bench.adbench --data-dir ../shared/data/tables                  # every .npz there and a level below
    python -m bench.adbench --data-dir ../shared/data/tables --sets 6_cardio --methods IsolationForest,"aekit AE"
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import importlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

import aekit
from aekit.atomic import atomic_write
from aekit.data import Dataset
from aekit.errors import AekitError, TrainingStopped
from aekit.evaluation.anomaly import RECONSTRUCTION, anomaly_scores
from aekit.models import model_config
from aekit.report.plots import markdown_table
from aekit.sklearn import outlier_detector
from aekit.sklearn.autoencoders import table_sizes
from aekit.sklearn.base import fitted
from aekit.training.trainer import TrainSettings, resolve_device
from bench.measure import device_name
from bench.mnist_runs import RESULTS, write_section

SECTION = "## Anomaly detection: ADBench tables"
SAVED = Path(__file__).with_name("results") / "adbench.json"
FIGURE = Path(__file__).with_name("figures") / "adbench_ranks.png"
INSTALL = {"pyod": "pip install pyod (or pip install -e '.[bench]')"}


class BenchError(AekitError):
    """A benchmark input that cannot be used as given (a data folder, a data set, a method)."""


class OverCap(BaseException):
    """A fit and score that ran past the cap (a BaseException, so that no library's ``except Exception`` keeps it)."""


@dataclasses.dataclass(frozen=True)
class Method:
    """A detector: ``scores(X, seed, args)`` gives each row's anomaly score (higher: more anomalous); ``package``
    is the module it needs beyond aekit's own requirements, ``neighbours`` says it searches neighbours among all
    rows (skipped above --neighbour-rows); ``variant_of`` names the method it varies (an option of aekit's
    detector), against which it is compared, seed by seed, rather than ranked among the detectors at their
    defaults."""

    scores: Callable[[np.ndarray, int, argparse.Namespace], np.ndarray]
    package: str | None = None
    neighbours: bool = False
    variant_of: str | None = None


def _aekit_detector(family: str, **params) -> Callable:
    def scores(x: np.ndarray, seed: int, args) -> np.ndarray:
        return -outlier_detector(family)(random_state=seed, **params).fit(x).score_samples(x)

    return scores


def _aekit_code_sizes(x: np.ndarray, seed: int, args) -> np.ndarray:
    """AutoEncoderOutlierDetector(n_components=(2, 4, 8)), its ensemble of three code sizes (each at most columns -
    1): the mean of the three detectors' scores."""
    sizes = tuple(sorted({max(1, min(size, x.shape[1] - 1)) for size in ENSEMBLE_CODES}))
    return -outlier_detector("ae")(n_components=sizes, random_state=seed).fit(x).score_samples(x)


def _aekit_pca(x: np.ndarray, seed: int, args) -> np.ndarray:
    rows = x.astype(np.float32)
    code = min(table_sizes(*rows.shape, TrainSettings().batch_size)["n_components"], len(rows))
    spec = model_config("pca", rows.shape[1:], code_dim=code, likelihood="gaussian", standardize=True)
    model, _ = fitted(spec, Dataset("table", rows, rows, None, None, binary=False), TrainSettings(seed=seed), _cpu())
    return anomaly_scores(model, rows, RECONSTRUCTION)


def _cpu() -> torch.device:
    return resolve_device("cpu")


def _isolation_forest(x: np.ndarray, seed: int, args) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    return -IsolationForest(random_state=seed).fit(x).score_samples(x)


def _one_class_svm(x: np.ndarray, seed: int, args) -> np.ndarray:
    from sklearn.svm import OneClassSVM

    pick = np.random.default_rng(seed).permutation(len(x))[: args.ocsvm_rows]
    return -OneClassSVM().fit(x[pick]).decision_function(x)


def _local_outlier_factor(x: np.ndarray, seed: int, args) -> np.ndarray:
    from sklearn.neighbors import LocalOutlierFactor

    return -LocalOutlierFactor().fit(x).negative_outlier_factor_


def _pyod(module: str, name: str, seeded: bool = False, **fields) -> Callable:
    """PyOD's detector ``name`` of ``pyod.models.<module>`` at its defaults (``fields`` are quiet progress, and
    DeepSVDD's number of columns, which it requires), seeded where it draws."""

    def scores(x: np.ndarray, seed: int, args) -> np.ndarray:
        detector = getattr(importlib.import_module(f"pyod.models.{module}"), name)
        given = {key: x.shape[1] if value is _COLUMNS else value for key, value in fields.items()}
        return detector(**given, **({"random_state": seed} if seeded else {})).fit(x).decision_scores_

    return scores


_COLUMNS = object()  # stands for the table's number of columns in _pyod's fields
ENSEMBLE_CODES = (2, 4, 8)  # the code sizes of "aekit AE x3 codes", the ensemble measured for issue 28
METHODS: dict[str, Method] = {
    "aekit AE": Method(_aekit_detector("ae")),
    "aekit AE x3 codes": Method(_aekit_code_sizes, variant_of="aekit AE"),
    "aekit AE early stopping": Method(_aekit_detector("ae", early_stopping=True), variant_of="aekit AE"),
    "aekit VAE": Method(_aekit_detector("vae")),
    "aekit PCA": Method(_aekit_pca),
    "IsolationForest": Method(_isolation_forest),
    "OneClassSVM": Method(_one_class_svm),
    "LocalOutlierFactor": Method(_local_outlier_factor, neighbours=True),
    "ECOD": Method(_pyod("ecod", "ECOD"), "pyod"),
    "COPOD": Method(_pyod("copod", "COPOD"), "pyod"),
    "KNN": Method(_pyod("knn", "KNN"), "pyod", neighbours=True),
    "HBOS": Method(_pyod("hbos", "HBOS"), "pyod"),
    "PyOD AutoEncoder": Method(_pyod("auto_encoder", "AutoEncoder", True, verbose=0), "pyod"),
    "PyOD VAE": Method(_pyod("vae", "VAE", True, verbose=0), "pyod"),
    "PyOD DeepSVDD": Method(_pyod("deep_svdd", "DeepSVDD", True, verbose=0, n_features=_COLUMNS), "pyod"),
}


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder of .npz files (X, y), or of folders")
    parser.add_argument("--sets", type=_names, help="data set names (file names without .npz; default: all)")
    parser.add_argument("--seeds", type=_names, default=["0"], help="default: 0 (ADBench: 3 seeds)")
    parser.add_argument("--methods", type=_names, default=list(METHODS), help=f"default: {','.join(METHODS)}")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap on one fit and score (default: 120)")
    parser.add_argument("--ocsvm-rows", type=int, default=10000, help="OneClassSVM's training rows at most")
    parser.add_argument("--neighbour-rows", type=int, default=50000, help="LOF and KNN only on tables up to this")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (1: the machine is shared)")
    parser.add_argument("--stop-after", type=float, help="start no measurement after this many seconds of this run")
    parser.add_argument("--note", default="", help="a sentence to add to the section (e.g. on the machine's load)")
    parser.add_argument("--json", type=Path, default=SAVED, help="where each result is saved (and resumed from)")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file whose section is rewritten")
    args = parser.parse_args(argv)
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return args


def data_sets(folder: Path, names: list[str] | None) -> dict[str, tuple[str, Path]]:
    """The .npz files of ``folder`` and of its folders, smallest file first: name -> (group, path), the group being
    the name of the folder a file lies in."""
    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder; give --data-dir a folder of .npz files (X, y)")
    found = sorted([*folder.glob("*.npz"), *folder.glob("*/*.npz")], key=lambda path: (path.stat().st_size, path))
    if not found:
        raise BenchError(f"{folder} holds no .npz file, nor do its folders; give a folder of .npz files (X, y)")
    sets = {path.stem: (path.parent.name, path) for path in found}
    missing = [name for name in names or () if name not in sets]
    if missing:
        raise BenchError(f"no data set {missing[0]!r} in {folder}; choose from {', '.join(sets)}")
    return {name: sets[name] for name in names} if names else sets


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 and y as bool, checked: finite cells, labels 0 and 1 only."""
    try:
        with np.load(path) as arrays:
            if "X" not in arrays or "y" not in arrays:
                raise BenchError(f"{path} holds {', '.join(arrays.files) or 'nothing'}; it needs X (rows) and y (0/1)")
            x, y = np.asarray(arrays["X"], dtype=np.float64), np.asarray(arrays["y"]).ravel()
    except (OSError, ValueError) as error:
        raise BenchError(f"{path} cannot be read as an .npz file ({error}); give an .npz holding X and y") from None
    if x.ndim != 2 or len(x) != len(y):
        raise BenchError(f"{path}: X must be rows x columns and y one label per row ({x.shape}, {y.shape})")
    if not np.isfinite(x).all():
        raise BenchError(f"{path}: X has NaN or infinite cells; fill or drop them")
    if not np.isin(y, (0, 1)).all():
        raise BenchError(f"{path}: y must hold 0 (normal) and 1 (anomaly) only")
    return x, y.astype(bool)


@contextlib.contextmanager
def capped(seconds: float):
    """Raise OverCap in the block once ``seconds`` have passed (a timer signal, seen between Python bytecodes: a
    single long call into compiled code is stopped when it returns)."""

    def stop(signum, frame):
        raise OverCap

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def measure(name: str, method: str, seed: int, x: np.ndarray, y: np.ndarray, args) -> dict:
    """One result: AUROC and AUPRC of ``method``'s scores of every row against y, and the seconds to fit and score;
    AUROC and AUPRC None where it ran past the cap (``capped``) or failed (``failed``, the error)."""
    result = {"dataset": name, "method": method, "seed": seed}
    begun = time.perf_counter()
    try:
        with capped(args.max_seconds):
            scores = np.asarray(METHODS[method].scores(x, seed, args), dtype=np.float64)
    except OverCap:
        return {**result, "auroc": None, "auprc": None, "seconds": args.max_seconds, "capped": True}
    except TrainingStopped:  # the user's Ctrl-C or SIGTERM inside aekit's training: the run stops, nothing saved
        raise
    except Exception as error:  # a detector that cannot handle a table is a result too, said in its words
        failed = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        return {**result, "auroc": None, "auprc": None, "seconds": time.perf_counter() - begun, "failed": failed}
    seconds = time.perf_counter() - begun
    if not np.isfinite(scores).all():
        return {**result, "auroc": None, "auprc": None, "seconds": seconds, "failed": "scores not all finite"}
    auroc, auprc = roc_auc_score(y, scores), average_precision_score(y, scores)
    return {**result, "auroc": round(float(auroc), 6), "auprc": round(float(auprc), 6), "seconds": round(seconds, 3)}


def stands(result: dict, args) -> bool:
    """Whether a saved result is kept by a rerun: a measurement, a failure, or a cap at least as long as this run's."""
    return not result.get("capped") or result["seconds"] >= args.max_seconds


def available(method: str, said: set[str]) -> bool:
    """Whether ``method``'s package imports; the first time one does not, one line says how to install it."""
    package = METHODS[method].package
    if package is None:
        return True
    try:
        importlib.import_module(package)
    except ImportError:
        if package not in said:
            said.add(package)
            print(f"adbench: {package} is not installed, its methods are skipped: {INSTALL[package]}", file=sys.stderr)
        return False
    return True


def load_saved(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text()) if path.exists() else []
    except (OSError, ValueError) as error:
        raise BenchError(f"{path} cannot be read as the saved results ({error}); move it away to start anew") from None


def _key(result: dict) -> tuple:
    return result["dataset"], result["method"], result["seed"]


def save(path: Path, result: dict) -> dict[tuple, dict]:
    """Add ``result`` to the results saved in ``path`` (over one of the same key) and return them all, by key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs of parts side by side (other methods, other sets) each add theirs
        saved = {_key(r): r for r in load_saved(path)} | {_key(result): result}
        atomic_write(path, (json.dumps(sorted(saved.values(), key=_key), indent=1) + "\n").encode())
    return saved


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        sets, index, todo = plan(args)
    except AekitError as error:
        print(f"adbench: error: {error}", file=sys.stderr)
        return 2
    try:
        for name, (_, path) in sets.items():
            if todo[name]:
                run_set(name, *read_table(path), todo[name], index, args, started)
    except TrainingStopped as stop:
        print(f"adbench: {stop}; what was measured before is saved, a rerun goes on from it", file=sys.stderr)
        return 128 + stop.signal_number
    results = load_saved(args.json)  # with those of runs side by side
    groups = {name: group for name, (group, _) in data_sets(args.data_dir, None).items()}
    text = section(results, groups, args, time.perf_counter() - started, argv if argv is not None else sys.argv[1:])
    draw_ranks(results, groups, args.figure)
    print("\n" + text)
    write_section(args.results, SECTION, text)
    return 0


def plan(args) -> tuple[dict, dict, dict]:
    """The data sets, the saved results by (dataset, method, seed), and each set's (method, seed) to measure; every
    table with something to measure is read and checked before any is measured."""
    sets = data_sets(args.data_dir, args.sets)
    index = {_key(r): r for r in load_saved(args.json)}
    said: set[str] = set()
    methods = [method for method in args.methods if available(method, said)]
    todo = {
        name: [
            (method, seed)
            for seed in map(int, args.seeds)
            for method in methods
            if not ((old := index.get((name, method, seed))) and stands(old, args))
        ]
        for name in sets
    }
    for name, (_, path) in sets.items():
        if todo[name]:
            read_table(path)
    return sets, index, todo


def run_set(name: str, x: np.ndarray, y: np.ndarray, todo: list, index: dict, args, started: float) -> None:
    """Measure ``todo`` on one table, saving each result as it is made."""
    for method, seed in todo:
        if args.stop_after is not None and time.perf_counter() - started > args.stop_after:
            return
        if METHODS[method].neighbours and len(x) > args.neighbour_rows:
            print(f"{name} {method}: skipped, {len(x)} rows > --neighbour-rows {args.neighbour_rows}")
            continue
        result = measure(name, method, seed, x, y, args)
        index.update(save(args.json, result))
        outcome = (
            f"AUROC {result['auroc']:.4f}, AUPRC {result['auprc']:.4f}"
            if result["auroc"] is not None
            else ("capped" if result.get("capped") else result["failed"])
        )
        print(
            f"[{time.perf_counter() - started:6.0f} s] {name} ({x.shape[0]}x{x.shape[1]}) seed {seed} {method}: "
            f"{outcome} ({result['seconds']:.1f} s)",
            flush=True,
        )


# ------------------------------------------------------------------------------------------------------ the summary


def by_set(results: list[dict]) -> dict[str, dict[str, dict]]:
    """dataset -> method -> {auroc, auprc: means over the seeds measured, or None if none was; seconds: their sum;
    capped, failed: how many seeds were}."""
    out: dict[str, dict[str, dict]] = {}
    for r in results:
        cell = out.setdefault(r["dataset"], {}).setdefault(
            r["method"], {"auroc": [], "auprc": [], "seconds": 0.0, "capped": 0, "failed": 0}
        )
        cell["seconds"] += r["seconds"]
        cell["capped"] += bool(r.get("capped"))
        cell["failed"] += "failed" in r
        if r["auroc"] is not None:
            cell["auroc"].append(r["auroc"])
            cell["auprc"].append(r["auprc"])
    for cells in out.values():
        for cell in cells.values():
            for key in ("auroc", "auprc"):
                cell[key] = float(np.mean(cell[key])) if cell[key] else None
    return out


def mean_ranks(table: dict[str, dict[str, dict]], methods: list[str], sets: list[str]) -> dict[str, float]:
    """Each method's rank by AUROC on each of ``sets`` among ``methods`` (1 the highest; ties share the mean of
    their ranks), averaged over the sets."""
    ranks = [rankdata([-table[s][m]["auroc"] for m in methods]) for s in sets]
    return {m: float(np.mean([r[i] for r in ranks])) for i, m in enumerate(methods)}


def summary(table: dict[str, dict[str, dict]], methods: list[str], sets: list[str]) -> list[dict]:
    """One row per method over ``sets`` (each finished by every one of ``methods``): mean AUROC, mean AUPRC, mean
    rank, seconds in all; best mean rank first."""
    ranks = mean_ranks(table, methods, sets)
    rows = [
        {
            "method": m,
            "mean AUROC": f"{np.mean([table[s][m]['auroc'] for s in sets]):.3f}",
            "mean AUPRC": f"{np.mean([table[s][m]['auprc'] for s in sets]):.3f}",
            "mean rank": f"{ranks[m]:.2f}",
            "seconds": f"{sum(table[s][m]['seconds'] for s in sets):.0f}",
        }
        for m in methods
    ]
    return sorted(rows, key=lambda row: float(row["mean rank"]))


def _methods(table: dict[str, dict[str, dict]], sets: list[str]) -> list[str]:
    """The methods at their defaults (no variants) with a result on any of ``sets``, in METHODS' order."""
    present = {m for s in sets for m in table.get(s, {})}
    return [m for m in METHODS if m in present and METHODS[m].variant_of is None]


def variants_text(results: list[dict], sets: list[str]) -> str:
    """Each variant against the method it varies, over the (set, seed) pairs of ``sets`` both measured."""
    auroc = {_key(r): r["auroc"] for r in results if r["auroc"] is not None}
    rows = []
    for name, method in METHODS.items():
        pairs = [
            (value, auroc[(s, method.variant_of, seed)])
            for (s, m, seed), value in auroc.items()
            if m == name and s in sets and (s, method.variant_of, seed) in auroc
        ]
        if method.variant_of and pairs:
            varied, base = np.array(pairs).T
            rows.append(
                {
                    "variant": name,
                    "of": method.variant_of,
                    "sets x seeds": str(len(pairs)),
                    "mean AUROC": f"{varied.mean():.3f}",
                    "its base's": f"{base.mean():.3f}",
                    "higher on": str(int((varied > base).sum())),
                    "lower on": str(int((varied < base).sum())),
                }
            )
    if not rows:
        return ""
    return "Options of aekit's detectors, each against the detector at its defaults on the same sets and seeds:\n\n" + (
        markdown_table(rows, list(rows[0])) + "\n"
    )


def _finished(table, methods: list[str], sets: list[str]) -> list[str]:
    """The sets among ``sets`` on which every one of ``methods`` has an AUROC."""
    return [s for s in sets if all(table[s].get(m, {}).get("auroc") is not None for m in methods)]


def _cell(cell: dict | None, key: str) -> str:
    if cell is None:
        return "-"
    if cell[key] is not None:
        return f"{cell[key]:.3f}"
    return "capped" if cell["capped"] else "failed"


def group_text(table: dict[str, dict[str, dict]], group: str, sets: list[str], results: list[dict]) -> str:
    """A group's per-set AUROC and AUPRC tables, its summaries and its variants' comparisons."""
    methods = _methods(table, sets)
    lines = [f"### {group}\n"]
    # The methods that finished all but a tenth of the sets at most, over the sets all of those finished.
    most = [m for m in methods if len(_finished(table, [m], sets)) >= 0.9 * len(sets)]
    common = _finished(table, methods, sets)
    counts = ", ".join(f"{m} {len(_finished(table, [m], sets))}" for m in methods)
    lines.append(f"Sets finished, of {len(sets)}: {counts}.\n")
    columns = ["method", "mean AUROC", "mean AUPRC", "mean rank", "seconds"]
    if common:
        lines += [
            f"Every method, over the {len(common)} sets that all of them finished:\n",
            markdown_table(summary(table, methods, common), columns),
        ]
    if most and most != methods:
        wide = _finished(table, most, sets)
        lines += [
            f"The {len(most)} methods that finished at least nine sets in ten, over the {len(wide)} sets that all of "
            "them finished:\n",
            markdown_table(summary(table, most, wide), columns),
        ]
    lines.append(variants_text(results, sets))
    for key in ("auroc", "auprc"):
        rows = [{"data set": s, **{m: _cell(table[s].get(m), key) for m in methods}} for s in sets]
        lines += [f"{key.upper()} per data set (mean over the seeds):\n", markdown_table(rows, ["data set", *methods])]
    return "\n".join(lines)


def section(results: list[dict], groups: dict[str, str], args, wall: float, argv: list[str]) -> str:
    table = by_set(results)
    shown = [s for s in groups if s in table]  # smallest file first
    capped_runs = sorted({f"{r['method']} on {r['dataset']}" for r in results if r.get("capped")})
    failed_runs = sorted({f"{r['method']} on {r['dataset']} ({r['failed']})" for r in results if "failed" in r})
    versions = f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, aekit {aekit.__version__}"
    with contextlib.suppress(ImportError):
        versions += f", pyod {importlib.import_module('pyod').__version__}"
    text = (
        f"{SECTION}\n\n`bench/adbench.py`: ADBench's unsupervised protocol (issue 28): each detector at its defaults "
        "is fitted on all rows of a table without its labels and scores every row; AUROC and AUPRC against the labels "
        "(1 an anomaly). Mean rank: each set's methods ranked by AUROC (1 the best, ties share), averaged over the "
        "sets. Seconds: fitting and scoring, summed over the sets and seeds.\n\n"
        f"{datetime.date.today().isoformat()}, {device_name(resolve_device('auto'))}, {versions}; wall time "
        f"{wall / 60:.1f} min of this invocation (results resumed from earlier invocations count their own seconds)."
        + (f" {args.note}" if args.note else "")
        + f"\n\n    python -m bench.adbench {' '.join(_quoted(_command(argv)))}\n\n"
        f"Caps: a fit and score is stopped at {args.max_seconds:g} s (capped); OneClassSVM is fitted on at most "
        f"{args.ocsvm_rows} rows drawn at random and scores every row; LocalOutlierFactor and KNN are not run on "
        f"tables of more than {args.neighbour_rows} rows. aekit PCA keeps as many components as the aekit "
        "detectors' default code has values (min(4, columns - 1)). Capped: "
        + ("; ".join(capped_runs) or "none")
        + ". Failed: "
        + ("; ".join(failed_runs) or "none")
        + ".\n\n"
    )
    for group in dict.fromkeys(groups[s] for s in shown):
        text += group_text(table, group, [s for s in shown if groups[s] == group], results) + "\n"
    return text


def _command(argv: list[str]) -> list[str]:
    """The arguments without --note and its sentence."""
    return [arg for i, arg in enumerate(argv) if arg != "--note" and (i == 0 or argv[i - 1] != "--note")]


def _quoted(argv: list[str]) -> list[str]:
    return [f'"{arg}"' if " " in arg else arg for arg in argv]


def draw_ranks(results: list[dict], groups: dict[str, str], path: Path) -> None:
    """Each group's mean ranks over the sets every method finished, a bar per method (shorter is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = by_set(results)
    panels = []
    for group in dict.fromkeys(groups[s] for s in groups if s in table):
        sets = [s for s in groups if groups[s] == group and s in table]
        methods = _methods(table, sets)
        common = _finished(table, methods, sets)
        if common:
            panels.append((group, len(common), mean_ranks(table, methods, common)))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (group, count, ranks) in zip(axes[0], panels):
        order = sorted(ranks, key=ranks.get, reverse=True)
        colours = ["tab:orange" if m.startswith("aekit") else "tab:blue" for m in order]
        ax.barh(order, [ranks[m] for m in order], color=colours)
        ax.set_xlabel("mean rank by AUROC (1 is best)")
        ax.set_title(f"{group}: {count} sets")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
