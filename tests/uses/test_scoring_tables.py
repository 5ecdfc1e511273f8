"""`aekit score` on tables: each row's score, and the AUROC and AUPRC against the anomaly labels a table gives."""

import csv
import json

import numpy as np
import pytest
from helpers import assert_refused, planted_table, run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

from aekit.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A PCA run trained on a planted table as a CSV file with a label column, and the table as .npz and CSV files."""
    folder = tmp_path_factory.mktemp("tables")
    x, y = planted_table()
    np.savez(folder / "t.npz", X=x, y=y)
    np.savetxt(folder / "t.csv", np.c_[y, x], delimiter=",", header="anomaly,a,b,c,d", comments="")
    np.savetxt(folder / "new.csv", x, delimiter=",", header="a,b,c,d", comments="")
    run = folder / "run"
    train = ["train", "--dataset", str(folder / "t.csv"), "--label-column", "anomaly", "--out", str(run)]
    assert main([*train, "--model", "pca", "--code-dim", "2", "--no-progress"]) == 0
    return folder, run, y


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_score_writes_each_rows_score_and_prints_the_auroc_and_auprc_against_the_labels(tables, capsys, tmp_path):
    folder, run, y = tables
    written = {}
    for name in ("t.npz", "t.csv"):
        out = tmp_path / f"{name}.csv"
        status, printed, err = run_cli(capsys, "score", str(run), str(folder / name), "--out", str(out))
        assert status == 0 and "60 scores written" in err
        rows = _rows(out)
        assert list(rows[0]) == ["index", "label", "reconstruction_nll"]
        assert [int(row["label"]) for row in rows] == y.tolist()
        scores = np.array([float(row["reconstruction_nll"]) for row in rows])
        assert set(np.argsort(-scores)[:6]) == set(range(6))  # the planted anomalies score highest
        expected = {"auroc": roc_auc_score(y, scores), "auprc": average_precision_score(y, scores)}
        assert json.loads(printed) == pytest.approx(expected) and expected["auroc"] == 1.0
        written[name] = scores
    np.testing.assert_array_equal(written["t.npz"], written["t.csv"])  # the label column is no value of a row
    # a table without the labels: its scores alone, nothing measured
    status, printed, _ = run_cli(capsys, "score", str(run), str(folder / "new.csv"), "--out", str(tmp_path / "n.csv"))
    assert status == 0 and printed == "" and list(_rows(tmp_path / "n.csv")[0]) == ["index", "reconstruction_nll"]
    np.testing.assert_array_equal([float(r["reconstruction_nll"]) for r in _rows(tmp_path / "n.csv")], written["t.npz"])


def test_score_refuses_a_bad_table_in_one_line_and_writes_nothing(tables, capsys, tmp_path):
    folder, run, y = tables
    x, _ = planted_table()
    x[4, 1] = np.nan
    np.savetxt(tmp_path / "nan.csv", x, delimiter=",")
    np.savez(tmp_path / "labels.npz", X=planted_table()[0], y=2 * y)
    for name, message in (("nan.csv", "holds NaN or infinite values"), ("labels.npz", "holds the label 2")):
        out = str(tmp_path / "scores.csv")
        assert_refused(capsys, tmp_path, "score", str(run), str(tmp_path / name), "--out", out, match=message)


def test_score_of_a_store_of_a_labelled_table_prints_the_auroc_and_auprc_of_its_rows(tables, capsys, tmp_path):
    folder, run, y = tables
    store = tmp_path / "t.store"
    assert (
        run_cli(capsys, "pack", str(folder / "t.npz"), "--out", str(store), "--no-progress", "--workers", "1")[0] == 0
    )
    out = tmp_path / "store.csv"
    status, printed, err = run_cli(capsys, "score", str(run), str(store), "--out", str(out))
    assert status == 0, err
    rows = _rows(out)
    assert list(rows[0]) == ["index", "label", "reconstruction_nll"]
    labels = np.array([int(row["label"]) for row in rows])  # the store's order: its training rows, then its test rows
    scores = np.array([float(row["reconstruction_nll"]) for row in rows])
    assert sorted(labels) == sorted(y)
    expected = {"auroc": roc_auc_score(labels, scores), "auprc": average_precision_score(labels, scores)}
    assert json.loads(printed) == pytest.approx(expected) and expected["auroc"] == 1.0


def test_score_takes_the_label_column_named_on_its_command_line(tables, capsys, tmp_path):
    """A run trained on a store packed from a CSV file with a label column knows no column name: the CSV file scores
    with --label-column, and without it is refused, saying so; a column the file lacks, or a file of no columns, too."""
    folder, run, y = tables
    store, store_run = tmp_path / "t.store", tmp_path / "store_run"
    pack = ["pack", str(folder / "t.csv"), "--label-column", "anomaly", "--out", str(store), "--workers", "1"]
    assert run_cli(capsys, *pack, "--no-progress")[0] == 0
    train = ["train", "--dataset", str(store), "--model", "pca", "--code-dim", "2", "--out", str(store_run)]
    assert run_cli(capsys, *train, "--no-progress")[0] == 0
    out = str(tmp_path / "scores.csv")
    assert_refused(capsys, tmp_path, "score", str(store_run), str(folder / "t.csv"), "--out", out, match="5 columns")
    _, _, err = run_cli(capsys, "score", str(store_run), str(folder / "t.csv"), "--out", out)
    assert "where one of them holds anomaly labels, name it: --label-column NAME" in err
    status, printed, err = run_cli(
        capsys, "score", str(store_run), str(folder / "t.csv"), "--out", out, "--label-column", "anomaly"
    )
    assert status == 0, err
    rows = _rows(tmp_path / "scores.csv")
    assert [int(row["label"]) for row in rows] == y.tolist() and json.loads(printed)["auroc"] == 1.0
    for source, flag, message in (
        ("t.csv", "nope", "has no column 'nope' (its columns are anomaly, a, b, c, d)"),
        ("t.npz", "anomaly", "--label-column anomaly names a column of a CSV file, and"),
    ):
        argv = ["score", str(run), str(folder / source), "--out", str(tmp_path / "x.csv"), "--label-column", flag]
        assert_refused(capsys, tmp_path, *argv, match=message)
