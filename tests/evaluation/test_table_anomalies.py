"""An unsupervised detector trained on a table whose labels mark anomalies: the labels are not used to fit, and the
report measures the scores against every labelled row (AUROC, AUPRC)."""

import json

import numpy as np
import pytest
from helpers import planted_table, run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

import aekit
from aekit.evaluation.anomaly import anomaly_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = ["--model", "pca", "--code-dim", "2", "--no-progress"]


def _train(capsys, folder, name, **arrays):
    np.savez(folder / f"{name}.npz", **arrays)
    out = folder / name
    assert run_cli(capsys, "train", "--dataset", str(folder / f"{name}.npz"), "--out", str(out), *FAST)[0] == 0
    return out


def test_the_report_gives_the_auroc_and_auprc_of_every_labelled_row(capsys, tmp_path):
    x, y = planted_table()
    run = _train(capsys, tmp_path, "t", X=x, y=y)
    metrics = json.loads((run / "metrics.json").read_text())
    scores = anomaly_scores(aekit.load(run), x.astype(np.float32))
    # every row, training and test split: the labels were not used to fit
    assert metrics["auroc_reconstruction_nll"] == pytest.approx(roc_auc_score(y, scores)) == 1.0
    assert metrics["auprc_reconstruction_nll"] == pytest.approx(average_precision_score(y, scores)) == 1.0
    report = (run / "report.html").read_text()
    assert "auprc_reconstruction_nll" in report and (run / "figures" / "roc.png").is_file()


def test_the_labels_are_not_used_to_fit(capsys, tmp_path):
    x, y = planted_table()
    weights = [
        (_train(capsys, tmp_path, name, X=x, **labels) / "model.safetensors").read_bytes()
        for name, labels in (
            ("labelled", {"y": y}),
            ("shuffled", {"y": np.random.default_rng(1).permutation(y)}),
            ("unlabelled", {}),
        )
    ]
    assert weights[0] == weights[1] == weights[2]
