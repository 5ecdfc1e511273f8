"""``aekit score``: the anomaly scores (:mod:`aekit.evaluation.anomaly`) of the examples in a file under a trained
run, written to a CSV file with a histogram beside it.

The input is anything the uses read (:func:`aekit.data.files.read_examples`: a folder of images, a store, an IDX or
``.npy`` file, a table), in any layout of the run's example size, read a batch at a time; only the scores (one number
an example) are held. A table's anomaly labels (y beside X in an .npz file, the column of a CSV file named by
``--label-column``, or else the one the run was trained with as such where the file has it, or a store packed from
either) measure the scores:
AUROC and AUPRC. A fully convolutional run scores images of any size as it compresses them, each whole
(:meth:`RateDistortionAE.map_nll`): a folder of images of mixed sizes, one image file, or an array of another size.
Every check is made before anything is written, and the CSV appears complete or not at all.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from aekit.atomic import atomic_file
from aekit.data.files import read_examples, read_table
from aekit.data.images import label_names, name_labels
from aekit.data.sources import check_label_column, recognised
from aekit.data.store import is_store, open_store
from aekit.errors import DataError
from aekit.evaluation.anomaly import SAMPLES, anomaly_scores, average_precision, check_score, roc, score_key
from aekit.models.base import device_of
from aekit.naming import option as named
from aekit.report.plots import save_histogram
from aekit.training import run_folder
from aekit.uses import file_jobs

# Rows a block of the CSV file.
_ROWS = 65536
# The most labels the histogram draws one outline each for; more are drawn as one.
_MAX_GROUPS = 10


class Scored(NamedTuple):
    """The scores :func:`score_file` wrote, and how well they tell a table's labelled anomalies from its normal
    examples (``{"auroc": ..., "auprc": ...}``; empty where the input labels none)."""

    scores: np.ndarray
    measures: dict[str, float]


def score_file(
    run_dir: str | Path,
    source: str | Path,
    out: str | Path,
    score: str,
    samples: int = SAMPLES,
    device: str = "cpu",
    overwrite: bool = False,
    label_column: str | None = None,
) -> Scored:
    """Write the anomaly score ``score`` (k = ``samples`` posterior draws for the VAE's) of every example in
    ``source`` under the run in ``run_dir`` to the CSV file ``out`` (columns: index, then name for a folder's images,
    label for a labelled store, a folder of subfolders or a labelled table and label_name where these name their
    classes, then the score, named for what it is) and their histogram (one outline per label where there are labels)
    to ``out`` with the suffix .png; returns the scores, with their AUROC and AUPRC where a table's (or its store's)
    labels mark anomalies. Either file that exists is replaced only with ``overwrite``, and neither may be the input
    or the run (:func:`aekit.atomic.check_output`). ``label_column``: a CSV file's column of anomaly labels (by
    default the run's ``--label-column``, where the file has it)."""
    out, source = Path(out), str(source)
    if out.suffix.lower() != ".csv" or out.is_dir():
        raise DataError(f"{out}: the scores go to a .csv file; name one, e.g. scores.csv")
    file_jobs.check_out_file(out, run_dir, source, overwrite, histogram_path(out))
    model = file_jobs.load_run(run_dir, device)
    check_score(model, score, samples)
    own = file_jobs.at_own_size(model, source)
    table = _table(run_dir, source, label_column, model.example_shape) if own is None else None
    if own is not None:
        scores, names = _scores_at_own_size(model, own.batches), own.names
    else:
        examples = read_examples(source) if table is None else table.examples
        scores = anomaly_scores(model, examples.x, score, samples=samples, source=source)  # checks its input first
        names = examples.names
    labels, classes, anomalies = _labels(source, names) if table is None else (table.labels, None, table.anomaly_labels)
    measures = {}
    if anomalies:
        truth = labels == 1
        measures = {"auroc": roc(scores, truth).auroc, "auprc": average_precision(scores, truth)}
    key = score_key(score, samples)
    named = None if labels is None or classes is None else np.asarray(classes)[labels]
    columns = {"index": np.arange(len(scores)), "name": names, "label": labels, "label_name": named}
    _write_csv(out, {name: values for name, values in {**columns, key: scores}.items() if values is not None})
    groups = (
        {"all": scores}
        if labels is None or len(np.unique(labels)) > _MAX_GROUPS
        else _by_label(scores, labels if named is None else named)
    )
    measured = "".join(f", {name.upper()} {value:.3f}" for name, value in measures.items())
    save_histogram(
        histogram_path(out),
        groups,
        f"{key}, nats (higher: more anomalous)",
        f"{Path(run_dir).name}: {key} of the {len(scores)} examples of {Path(source).name}{measured}",
    )
    return Scored(scores, measures)


def _table(run_dir: str | Path, source: str, label_column: str | None, shape: tuple[int, ...] | None):
    """The examples and labels of ``source`` where it is a table (:func:`aekit.data.files.read_table`; a CSV file's
    labels in the column ``label_column``, else in the run's ``--label-column`` where the file has one so named),
    else None. A CSV file of one column more than a model of ``shape`` takes, none of them labels, is refused with
    the hint of ``--label-column`` (a run trained on a store of the table does not know its label column)."""
    check_label_column(recognised(source), source, label_column)
    if Path(source).suffix.lower() not in (".npz", ".csv") or not Path(source).is_file():
        return None
    if label_column is None:
        recorded = run_folder.read_config(Path(run_dir)).get("options", {}).get("label_column")
        table = read_table(source, recorded, required=False)
    else:
        table = read_table(source, label_column)
    columns = table.examples.x.shape[1:]
    if table.labels is None and shape is not None and len(columns) == 1 and columns[0] == math.prod(shape) + 1:
        raise DataError(
            f"{source} has {columns[0]} columns and the run takes {columns[0] - 1}; where one of them holds anomaly "
            f"labels, name it: {named('label_column', 'NAME')}"
        )
    return table


def _scores_at_own_size(model, batches) -> np.ndarray:
    """The reconstruction NLL (nats) of each image of batches of images of a fully convolutional run
    (:func:`aekit.uses.file_jobs.at_own_size`), each batch (n, channels, height, width) of any one size, each image
    scored whole at its size."""
    scores = []
    model.eval()
    for x in batches:
        scores.append(model.map_nll(torch.from_numpy(np.ascontiguousarray(x)).to(device_of(model))).double().cpu())
    return torch.cat(scores).numpy()


def histogram_path(out: str | Path) -> Path:
    """Where :func:`score_file` draws the histogram of the scores it writes to ``out``: beside it, as .png."""
    return Path(out).with_suffix(".png")


def _labels(source: str, names: list[str] | None) -> tuple[np.ndarray | None, tuple[str, ...] | None, bool]:
    """The labels of the examples of ``source`` in their order and the names of their classes by number, each None
    where the data has none: a store's (its training split's, then its test split's), or those of a folder's images
    (``names``) by subfolder, numbered as training on the folder numbers them; and whether they mark anomalies (a
    store of a table's anomaly labels)."""
    if names is not None:
        return name_labels(names), label_names(names), False
    if not is_store(Path(source)):
        return None, None, False
    store = open_store(source)
    labels = None if store.y_train is None else np.concatenate([store.y_train, store.y_test])
    return labels, store.label_names, store.anomaly_labels


def _by_label(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The scores of each label (a number or a name)."""
    return {f"label {label}": scores[labels == label] for label in np.unique(labels)}


def _write_csv(path: Path, columns: dict[str, object]) -> None:
    """The columns (equally long sequences) as a CSV file with a header, written a block of rows at a time."""
    with atomic_file(path) as file:
        n = len(next(iter(columns.values())))
        for start in range(0, max(n, 1), _ROWS):
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            if start == 0:
                writer.writerow(columns)
            block = [values[start : start + _ROWS] for values in columns.values()]
            writer.writerows(zip(*(_plain(values) for values in block)))
            file.write(text.getvalue().encode())


def _plain(values) -> list:
    """Values as the CSV writes them: floats with every digit that tells them apart (repr), ints and names as they
    are."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)
