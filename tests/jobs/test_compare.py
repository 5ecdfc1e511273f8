"""``aekit compare``: every model on the same split, the tables, the figures, reuse of runs and the sweep."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_refused, run_cli, snapshot
from PIL import Image
from sklearn.decomposition import PCA

from aekit.cli import main
from aekit.errors import RunError
from aekit.jobs.compare import compare, weighs_rate
from aekit.models import FAMILIES
from aekit.models.config import coding_families
from aekit.training import run_folder

FAST = ["--epochs", "2", "--hidden", "32", "--no-progress"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "digits"
    assert (
        main(
            [
                "compare",
                "--dataset",
                "digits",
                "--models",
                ",".join(coding_families()),
                "--code-dim",
                "5",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    return out


def test_compare_writes_one_row_per_model_and_pca_matches_scikit_learn(compared, digits):
    rows = read_rows(compared / "comparison.csv")
    assert [row["model"] for row in rows] == [FAMILIES[name].label for name in coding_families()]
    assert [row["model"] for row in rows][:6] == ["PCA", "AE", "DAE", "Dropout-AE", "AAE", "VAE"]
    for row in rows:
        for column in ("sse_per_example", "mse", "knn_accuracy", "logreg_accuracy", "train_seconds", "parameters"):
            assert float(row[column]) >= 0, (row["model"], column)
        assert row["code_dim"] == "5" and row["reused"] == "False"
    assert all(row["bce_per_example"] for row in rows[1:]) and not rows[0]["bce_per_example"]
    assert [row["model"] for row in rows if row["neg_elbo"]] == ["VAE"]

    train, test = digits.x_train.reshape(len(digits.x_train), -1), digits.x_test.reshape(len(digits.x_test), -1)
    sklearn_pca = PCA(n_components=5).fit(train)
    again = sklearn_pca.inverse_transform(sklearn_pca.transform(test))
    sse = ((again - test) ** 2).sum(1).mean()
    assert float(rows[0]["sse_per_example"]) == pytest.approx(sse, rel=1e-4)
    assert float(rows[0]["mse"]) == pytest.approx(sse / test.shape[1], rel=1e-4)
    assert int(rows[0]["parameters"]) == 5 * 64 + 64  # components and mean

    # The best of each column is marked: the lowest error in the CSV's best_in and in bold in the Markdown.
    sse_values = [float(row["sse_per_example"]) for row in rows]
    best = int(np.argmin(sse_values))
    assert "sse_per_example" in rows[best]["best_in"].split(";")
    assert sum("sse_per_example" in row["best_in"].split(";") for row in rows) == 1
    most_accurate = max(float(row["knn_accuracy"]) for row in rows)
    assert all(("knn_accuracy" in row["best_in"]) == (float(row["knn_accuracy"]) == most_accurate) for row in rows)
    table = (compared / "comparison.md").read_text()
    for label in ("PCA", "AE", "DAE", "Dropout-AE", "AAE", "VAE"):
        assert f"| {label} |" in table
    line = next(line for line in table.splitlines() if line.startswith(f"| {rows[best]['model']} |"))
    assert f"**{float(rows[best]['sse_per_example']):.3f}**" in line


def test_comparison_figure_has_a_row_per_model_and_a_denoising_block(compared):
    with Image.open(compared / "figures" / "comparison.png") as image:
        width, height = image.size
    # original + 6 models, then noisy input + 6 models: 14 rows of images about as tall as a column is wide.
    assert height > 1.1 * width
    for model in coding_families():
        assert (compared / "runs" / f"{model}-5" / "model.safetensors").is_file()


def test_compare_reuses_finished_runs_and_sweeps_code_sizes(compared, tmp_path):
    before = snapshot(compared / "runs" / "ae-5")
    out = tmp_path / "sweep"
    status = main(
        [
            "compare",
            "--models",
            "pca,ae",
            "--code-dims",
            "2,5",
            "--runs",
            str(compared / "runs"),
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert status == 0
    rows = read_rows(out / "comparison.csv")
    assert [(row["model"], row["code_dim"], row["reused"]) for row in rows] == [
        ("PCA", "2", "False"),
        ("AE", "2", "False"),
        ("PCA", "5", "True"),
        ("AE", "5", "True"),
    ]
    assert snapshot(compared / "runs" / "ae-5") == before
    first = {row["model"]: row for row in read_rows(compared / "comparison.csv")}
    assert rows[3]["sse_per_example"] == first["AE"]["sse_per_example"]
    # The best is marked within each code size.
    for dim in ("2", "5"):
        group = [row for row in rows if row["code_dim"] == dim]
        assert sum("sse_per_example" in row["best_in"] for row in group) == 1
    for name in ("sweep.png", "comparison-2.png", "comparison-5.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert float(rows[0]["sse_per_example"]) > float(rows[2]["sse_per_example"])  # PCA: more components, less error


SWEEP = ["--dataset", "digits", "--models", "rd-ae", "--code-dim", "4", "--epochs", "1", "--hidden", "16"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "rd"
    assert main(["compare", *SWEEP, "--rate-lambdas", "0.01,2", "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_sweep_of_rate_weights_trains_a_run_per_weight_and_draws_rate_against_distortion(swept):
    rows = read_rows(swept / "comparison.csv")
    assert [(row["model"], row["code_dim"], row["rate_lambda"], row["reused"]) for row in rows] == [
        ("RD-AE", "4", "0.01", "False"),
        ("RD-AE", "4", "2.0", "False"),
    ]
    for row, weight in zip(rows, (0.01, 2.0)):
        config = json.loads((Path(row["run"]) / "config.json").read_text())
        assert config["options"]["rate_lambda"] == config["model"]["rate_lambda"] == weight
        assert Path(row["run"]).parent == swept / "runs"
        for column in ("bits_per_pixel", "rate_bits_per_example", "mse", "train_seconds"):
            assert float(row[column]) > 0, column
        assert float(row["bits_per_pixel"]) == pytest.approx(float(row["rate_bits_per_example"]) / 64)
        history = read_rows(Path(row["run"]) / run_folder.HISTORY)
        assert float(row["train_seconds"]) == pytest.approx(sum(float(epoch["seconds"]) for epoch in history))
    table = (swept / "comparison.md").read_text()
    assert "rate weights lambda 0.01, 2.0" in table and "| model | rate_lambda |" in table
    assert "| RD-AE | 2.0 |" in table
    assert (swept / "figures" / "rate_distortion.png").stat().st_size > 1000
    assert not (swept / "figures" / "sweep.png").exists()


def test_a_sweep_called_again_reuses_its_runs_and_trains_only_the_new_weights(swept, tmp_path):
    before = snapshot(swept / "runs")
    out = tmp_path / "more"
    argv = ["compare", *SWEEP, "--rate-lambdas", "0.01,0.5,2", "--runs", str(swept / "runs"), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    rows = read_rows(out / "comparison.csv")
    assert [(row["rate_lambda"], row["reused"]) for row in rows] == [
        ("0.01", "True"),
        ("0.5", "False"),
        ("2.0", "True"),
    ]
    assert {k: v for k, v in snapshot(swept / "runs").items() if "lambda0.5" not in k} == before
    assert rows[2]["mse"] == read_rows(swept / "comparison.csv")[1]["mse"]


def test_a_run_a_killed_comparison_left_unfinished_is_resumed_not_trained_again(swept, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(swept / "runs" / "rd-ae-4-lambda0.01", runs / "cut")
    (runs / "cut" / run_folder.METRICS).unlink()  # killed after its epochs, before its evaluation
    history = (runs / "cut" / run_folder.HISTORY).read_text()
    argv = ["compare", *SWEEP, "--rate-lambdas", "0.01", "--runs", str(runs), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "resuming rd-ae, code size 4, rate lambda 0.01" in capsys.readouterr().out
    (row,) = read_rows(tmp_path / "out" / "comparison.csv")
    assert (row["run"], row["reused"]) == (str(runs / "cut"), "False")
    assert (runs / "cut" / run_folder.HISTORY).read_text() == history
    assert row["mse"] == read_rows(swept / "comparison.csv")[0]["mse"]
    assert sorted(p.name for p in runs.iterdir()) == ["cut"]


def test_a_comparison_without_a_rate_weight_on_a_sweeps_runs_says_how_to_choose_one(swept, tmp_path, capsys):
    argv = ["compare", *SWEEP, "--runs", str(swept / "runs"), "--out", str(tmp_path / "out"), "--no-progress"]
    assert_refused(
        capsys,
        swept / "runs",
        *argv,
        match="all hold a rd-ae run of code size 4 on this split; choose one with --rate-lambda,",
    )
    assert not (tmp_path / "out").exists()


def test_the_families_a_sweep_of_rate_weights_takes_by_default_weigh_a_rate():
    assert {"rd-ae", "hyperprior"} <= {m for m in coding_families() if weighs_rate(m)}
    assert not weighs_rate("ae") and not weighs_rate("pca")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--models", "pca,foo"], "unknown models ['foo']"),
        (["--code-dims", "2,2"], "distinct positive"),
        (["--models", "pca,pca"], "name one twice"),
        (["--code-dim", "100", "--models", "pca"], "PCA cannot keep"),
        (
            ["--models", "rd-ae,ae,pca", "--rate-lambdas", "0.01,0.1"],
            "not of ae, pca, which have none: drop them",
        ),
        (["--models", "rd-ae", "--rate-lambdas", "0.01,0.010"], "must be distinct finite numbers >= 0"),
        (["--models", "rd-ae", "--rate-lambdas", "0.01,nan"], "must be distinct finite numbers >= 0"),
        (["--models", "rd-ae", "--rate-lambdas=-0.01,0.1"], "must be distinct finite numbers >= 0"),
        (["--models", "rd-ae", "--rate-lambdas", "0.01,inf"], "must be distinct finite numbers >= 0"),
        (["--models", "rd-ae", "--rate-lambdas", ""], "is not a comma-separated list of numbers"),
        (["--models", "rd-ae", "--rate-lambdas", "0.1,x"], "is not a comma-separated list of numbers"),
        (["--rate-lambda", "0.1", "--rate-lambdas", "0.1,0.2"], "not allowed with argument --rate-lambda"),
        (["--models", "rd-ae", "--code-dims", "2,3", "--rate-lambdas", "0.1,0.2"], "code sizes or rate weights"),
    ],
)
def test_compare_refuses_bad_requests_in_one_line_and_writes_nothing(capsys, tmp_path, argv, match):
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "compare", "--out", str(out), *argv, *FAST)
    err = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(err) == 1 and match in err[0], err
    assert not out.exists()


def test_a_runs_folder_holding_another_run_under_the_name_is_refused(compared, tmp_path):
    with pytest.raises(RunError, match="something other than"):
        compare(
            tmp_path / "out",
            models=("ae",),
            code_dims=(5,),
            runs_dir=compared / "runs",
            options={"epochs": 3, "hidden": (32,)},
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_compare_adds_the_vae_likelihood_estimate(compared, tmp_path):
    out = tmp_path / "nll"
    assert (
        main(
            [
                "compare",
                "--models",
                "pca,vae",
                "--code-dim",
                "5",
                "--runs",
                str(compared / "runs"),
                "--nll-samples",
                "10",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    rows = read_rows(out / "comparison.csv")
    assert [row["reused"] for row in rows] == ["True", "True"]
    assert not rows[0]["nll_is_10"] and 0 < float(rows[1]["nll_is_10"]) < float(rows[1]["neg_elbo"]) + 1
    assert "nll_is_10" in (out / "comparison.md").read_text()


def test_the_table_states_the_batch_the_runs_used(tmp_path):
    # 180 training digits: the default batch of 128 would make 2 steps an epoch, so the runs use one of 18.
    assert (
        main(
            [
                "compare",
                "--out",
                str(tmp_path / "cmp"),
                "--models",
                "pca,ae",
                "--code-dim",
                "2",
                "--test-fraction",
                "0.9",
                "--device",
                "cpu",
                *FAST,
            ]
        )
        == 0
    )
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "2 epochs of batch 18 for the neural models" in table
    assert read_rows(tmp_path / "cmp" / "comparison.csv")[1]["model"] == "AE"


def test_a_run_trained_on_other_data_at_the_same_path_is_not_reused(capsys, tmp_path):
    data, runs_dir = tmp_path / "table.npy", tmp_path / "runs"
    rng = np.random.default_rng(0)
    np.save(data, rng.normal(size=(40, 6)).astype(np.float32))
    argv = ["compare", "--models", "pca", "--code-dim", "2", "--dataset", str(data), "--runs", str(runs_dir)]
    assert main([*argv, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    np.save(data, rng.normal(size=(40, 6)).astype(np.float32))  # other values, the same shape
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "two"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pca run of code size 2 trained on other data" in err[0], err
    assert "holds other examples, labels or split than the run was trained on" in err[0]
    assert not (tmp_path / "two").exists()
