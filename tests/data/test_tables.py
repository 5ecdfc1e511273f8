"""Tables to train an anomaly detector on: an .npz file of X and y (ADBench's tables) or a CSV file with a column of
anomaly labels (--label-column), and what is refused."""

import json

import numpy as np
import pytest
from helpers import assert_refused, planted_table, run_cli

from aekit.data import load_dataset

FAST = ["--model", "pca", "--code-dim", "2", "--no-progress"]
PACK = ["--no-progress", "--workers", "1"]


def test_an_npz_of_x_and_y_and_a_csv_with_a_label_column_give_the_same_table_and_anomaly_labels(tmp_path):
    x, y = planted_table()
    np.savez(tmp_path / "t.npz", X=x, y=y)
    # the label column in the middle, the examples' columns on either side of it
    np.savetxt(tmp_path / "t.csv", np.c_[x[:, :2], y, x[:, 2:]], delimiter=",", header="a,b,label,c,d", comments="")
    npz = load_dataset(str(tmp_path / "t.npz"))
    csv = load_dataset(str(tmp_path / "t.csv"), label_column="label")
    for data in (npz, csv):
        assert data.anomaly_labels and data.shape == (4,)
        together = np.concatenate([data.y_train, data.y_test])
        assert sorted(together) == sorted(y)
    np.testing.assert_array_equal(npz.x_train, csv.x_train)
    np.testing.assert_array_equal(npz.y_test, csv.y_test)
    # lower-case x keeps its y as class labels, as before
    np.savez(tmp_path / "classes.npz", x=x, y=y)
    assert not load_dataset(str(tmp_path / "classes.npz")).anomaly_labels


# Each bad table: its file, the extra flags, and what the one-line refusal says.
BAD = [
    ("nan.csv", [], "holds NaN or infinite values"),
    ("inf.npz", [], "holds NaN or infinite values"),
    ("text.csv", [], "line 9, column 2 holds 'red', which is not a number"),
    ("one.csv", [], "has one column"),
    ("five.csv", [], "4 training rows are too few to learn from"),
    ("same.csv", [], "its 48 training rows are all the same"),
    ("labels.csv", ["--label-column", "y"], "holds the label 2, but anomaly labels are 1 (an anomaly) and 0"),
    ("labels.npz", [], "holds the label 2, but anomaly labels are 1 (an anomaly) and 0"),
    ("normal.csv", ["--label-column", "y"], "labels no anomalies (1)"),
    ("labels.csv", ["--label-column", "class"], "has no column 'class' (its columns are a, b, c, d, y)"),
    ("nan.csv", ["--label-column", "y"], "has no column 'y' (it has no header row)"),
    ("inf.npz", ["--label-column", "y"], "--label-column y names a column of a CSV file"),
    (
        "nox.npz",
        [],
        "holds arrays ['data', 'y']; expected x_train and x_test (optionally y_train and y_test), or x or X",
    ),
    ("onlyy.npz", [], "has shape (60,) but examples must be the rows"),
]


def _write_bad_tables(folder):
    """The bad tables of :data:`BAD` in ``folder``."""
    x, y = planted_table()
    with_nan, with_inf = x.copy(), x.copy()
    with_nan[3, 2], with_inf[5, 1] = np.nan, np.inf
    np.savetxt(folder / "nan.csv", with_nan, delimiter=",")
    np.savez(folder / "inf.npz", X=with_inf, y=y)
    (folder / "text.csv").write_text(
        "a,b\n" + "".join(f"{v:.3f},{'red' if i == 7 else 1}\n" for i, v in enumerate(x[:, 0]))
    )
    np.savetxt(folder / "one.csv", x[:, :1], delimiter=",")
    np.savetxt(folder / "five.csv", x[:5], delimiter=",")
    np.savetxt(folder / "same.csv", np.ones((60, 4)), delimiter=",")
    np.savetxt(folder / "labels.csv", np.c_[x, np.where(y == 1, 2, 0)], delimiter=",", header="a,b,c,d,y", comments="")
    np.savetxt(folder / "normal.csv", np.c_[x, 0 * y], delimiter=",", header="a,b,c,d,y", comments="")
    np.savez(folder / "labels.npz", X=x, y=2 * y)
    np.savez(folder / "nox.npz", data=x, y=y)
    np.savez(folder / "onlyy.npz", y=y)


@pytest.mark.parametrize("name, extra, message", BAD)
def test_a_bad_table_is_refused_in_one_line_and_nothing_is_written(name, extra, message, tmp_path, capsys):
    _write_bad_tables(tmp_path)
    out = tmp_path / "run"
    train = ["train", "--dataset", str(tmp_path / name), "--out", str(out), *FAST, *extra]
    assert_refused(capsys, tmp_path, *train, match=message)
    assert not out.exists()


def _measured(capsys, folder, dataset, *extra):
    """The AUROC and AUPRC in the metrics of a run trained on ``dataset``."""
    out = folder / f"run-{dataset.name}"
    status, _, err = run_cli(capsys, "train", "--dataset", str(dataset), "--out", str(out), *FAST, *extra)
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if key.startswith(("auroc_", "auprc_"))}


def test_a_table_packed_with_its_anomaly_labels_trains_to_the_same_auroc_and_auprc(tmp_path, capsys):
    x, y = planted_table()
    y[6:9] = 1  # three normal rows labelled anomalies: measures below 1
    np.savez(tmp_path / "t.npz", X=x, y=y)
    np.savetxt(tmp_path / "t.csv", np.c_[x[:, :2], y, x[:, 2:]], delimiter=",", header="a,b,label,c,d", comments="")
    for name, extra in (("t.npz", []), ("t.csv", ["--label-column", "label"])):
        store = tmp_path / f"{name}.store"
        status, _, err = run_cli(capsys, "pack", str(tmp_path / name), "--out", str(store), *PACK, *extra)
        assert status == 0, err
        data = load_dataset(str(store))
        assert data.anomaly_labels and data.shape == (4,) and data.label_names is None
        measured = _measured(capsys, tmp_path, store)
        assert len(measured) == 2 and measured["auroc_reconstruction_nll"] < 1
        assert measured == pytest.approx(_measured(capsys, tmp_path, tmp_path / name, *extra))
    # an .npz of x and y keeps its y as class labels in the store, as before
    np.savez(tmp_path / "classes.npz", x=x, y=y)
    assert run_cli(capsys, "pack", str(tmp_path / "classes.npz"), "--out", str(tmp_path / "c.store"), *PACK)[0] == 0
    manifest = json.loads((tmp_path / "c.store" / "manifest.json").read_text())
    assert "anomaly_labels" not in manifest and not load_dataset(str(tmp_path / "c.store")).anomaly_labels


@pytest.mark.parametrize("name, extra, message", [bad for bad in BAD if bad[1]])
def test_pack_refuses_bad_anomaly_labels_in_one_line_and_writes_nothing(name, extra, message, tmp_path, capsys):
    _write_bad_tables(tmp_path)
    out = tmp_path / "store"
    assert_refused(capsys, tmp_path, "pack", str(tmp_path / name), "--out", str(out), *PACK, *extra, match=message)
    assert not out.exists()
