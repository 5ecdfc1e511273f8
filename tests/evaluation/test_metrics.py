"""The metric registry (aekit.evaluation.metrics): one declaration per metric, drawn on by evaluate, compare, the demo
table, evaluate_run and the HTML report; the chunked batching helper and the context that puts the model's mode back."""

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from aekit.data import Dataset
from aekit.data.dataset import sample_index
from aekit.evaluation import evaluate
from aekit.evaluation.measures import (
    codebook_perplexity,
    importance_weighted_nll,
    negative_elbo,
    probe_accuracies,
    reconstruction_metrics,
)
from aekit.evaluation.metrics import (
    NEIGHBOURS,
    PROBE_EXAMPLES,
    REGISTRY,
    Metric,
    columns,
    formatted,
    kept,
    legend,
    lookup,
    register,
)
from aekit.jobs.compare import compare
from aekit.jobs.workflow import demo, evaluate_run
from aekit.models import AutoEncoder, Gaussian, build_model, model_config
from aekit.models.inference import batches, codes, evaluating, in_batches
from aekit.report.html import render_report
from aekit.training import run_folder
from aekit.training.trainer import mean_loss

# --- a new metric, registered once, is everywhere -------------------------------------------------------------------


def test_a_registered_metric_appears_in_evaluate_compare_the_demo_the_report_and_evaluate_run(
    tmp_path, monkeypatch, digits
):
    answer = Metric("answer", "what the probe says, in units of 42", ".1f", True, lambda s: {"answer": 42.0})
    pca_only = Metric(
        "pca_only", "a metric of PCA alone", ".2f", False, lambda s: {"pca_only": 1.0}, lambda s: s.model.closed_form
    )
    carbon = Metric("carbon_grams", "CO2 emitted while training, g", ".1f", False)  # recorded, not recomputed
    for metric in (answer, pca_only, carbon):
        monkeypatch.setitem(REGISTRY, metric.name, metric)

    ae = build_model(model_config("ae", digits.shape, code_dim=2, hidden=(8,)))
    metrics = evaluate(ae, digits)
    assert metrics["answer"] == 42.0 and "pca_only" not in metrics and "carbon_grams" not in metrics
    assert list(metrics)[-1] == "answer", "registry order: the new metric comes last"

    out = tmp_path / "cmp"
    table = compare(out, models=("pca", "ae"), code_dims=(2,), options={"epochs": 1, "hidden": (8,)}, progress=False)
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["answer"] for row in rows] == ["42.0", "42.0"]
    assert [row["pca_only"] for row in rows] == ["1.0", ""]
    assert all("answer" in row["best_in"].split(";") for row in rows), "a tie is best for both"
    assert next(line for line in table.splitlines() if line.startswith("| model |")).endswith("| answer | pca_only |")
    assert "- `answer`: what the probe says, in units of 42; higher is better" in table
    assert "**42.0**" in table and table == (out / "comparison.md").read_text()

    # The report of a run shows it, formatted and described.
    page = (out / "runs" / "pca-2" / "report.html").read_text()
    assert '<th>answer</th><td class="number">42.0</td><td>what the probe says' in page

    # A recorded metric is kept by evaluation; its column and format come with it.
    saved = run_folder.read_json(out / "runs" / "ae-2" / run_folder.METRICS)
    run_folder.write_json(out / "runs" / "ae-2" / run_folder.METRICS, {**saved, "carbon_grams": 3.25, "unknown": 1})
    again = evaluate_run(out / "runs" / "ae-2")
    assert again["carbon_grams"] == 3.25 and "unknown" not in again and again["answer"] == 42.0
    assert again["epochs"] == saved["epochs"] and again["train_seconds"] == saved["train_seconds"]
    assert '<th>carbon_grams</th><td class="number">3.2</td>' in (out / "runs" / "ae-2" / "report.html").read_text()

    shown = demo(tmp_path / "demo", code_dim=2, epochs=1, progress=False)
    lines = {line.split(" |")[0]: line for line in shown.splitlines() if line.startswith("| ")}
    assert lines["| model"].endswith("| answer | pca_only |")
    assert lines["| PCA"].endswith("| 42.0 | 1.00 |") and lines["| VAE"].endswith("| 42.0 | - |")
    assert "- `pca_only`: a metric of PCA alone; lower is better" in shown


def test_registry_lookups_columns_formats_and_what_evaluation_keeps():
    nll = lookup("nll_is_5000")
    assert nll is REGISTRY["nll_is_{k}"] and lookup("nll_is_") is None and lookup("model") is None
    assert nll.describe("nll_is_50") == "importance-weighted NLL estimate per example with 50 samples, nats (VAE); " + (
        "lower is better"
    )
    rows = [
        {"model": "VAE", "nll_is_10": 1.0, "nll_is_5": 2.0, "mse": 0.1, "epochs": 3, "r2": None},
        {"model": "PCA", "parameters": 704, "sse_per_example": 1.5},
    ]
    assert columns(rows) == ["sse_per_example", "mse", "nll_is_5", "nll_is_10", "parameters", "epochs"]
    assert formatted("mse", 0.0123456) == "0.01235" and formatted("parameters", np.int64(704)) == "704"
    assert formatted("mse", None) == "-" and formatted("model", "VAE") == "VAE"
    assert legend(["epochs"]) == "- `epochs`: epochs trained\n"
    previous = {"sse_per_example": 9.0, "train_seconds": 1.5, "nll_is_20": 80.0, "batch_size": 64}
    assert kept(previous, {"sse_per_example": 1.0}) == {"sse_per_example": 1.0, "train_seconds": 1.5, "nll_is_20": 80.0}
    with pytest.raises(ValueError, match="registered already"):
        register(Metric("mse", "again", ".1f", False))


def test_the_report_titles_each_metric_column_with_its_description():
    page = render_report("t", {}, [{"model": "ae", "mse": 0.5}, {"model": "pca", "mse": 0.25}], [])
    assert '<th title="squared error per element; lower is better">mse</th>' in page
    assert '<th title="">model</th>' in page and '<td class="number">0.25000</td>' in page


@pytest.mark.slow
def test_the_registry_and_the_report_load_without_torch():
    code = "import sys, aekit.evaluation.metrics, aekit.report.html; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- codebook usage -------------------------------------------------------------------------------------------------


class Codebook(nn.Module):
    """A fake codebook model: each example's two code indices are its first two values."""

    codebook_size = 4

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    def code_indices(self, x):
        return x[:, :2].long()


@pytest.mark.parametrize(
    "indices, expected",
    [
        ([[0, 0]] * 6, 1.0),
        ([[0, 1], [2, 3]] * 3, 4.0),
        ([[0, 1]] * 5, 2.0),
        ([[0, 0], [0, 1]], math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
    ],
    ids=["one-entry", "uniform", "two-of-four", "skewed"],
)
def test_codebook_perplexity_is_the_exponential_of_the_entropy_of_the_index_histogram(indices, expected):
    assert codebook_perplexity(Codebook(), np.array(indices, np.float32), batch_size=3) == pytest.approx(expected)


class CodebookAE(AutoEncoder):
    """An auto-encoder with a (fake) codebook: evaluate must score its codebook usage."""

    codebook_size = 3

    def code_indices(self, x):
        return (x[:, 0] * 2.999).long()


def test_evaluate_scores_codebook_usage_where_a_model_has_a_codebook():
    rng = np.random.default_rng(0)
    x = rng.random((40, 4), dtype=np.float32)
    data = Dataset("toy", x[:30], x[30:], None, None, binary=False)
    model = CodebookAE(nn.Linear(4, 2), nn.Linear(2, 4), Gaussian, code_dim=2, example_shape=(4,))
    metrics = evaluate(model, data)
    assert metrics["codebook_perplexity"] == pytest.approx(codebook_perplexity(model, data.x_test))
    assert 1 <= metrics["codebook_perplexity"] <= 3
    plain = AutoEncoder(nn.Linear(4, 2), nn.Linear(2, 4), Gaussian, code_dim=2, example_shape=(4,))
    assert "codebook_perplexity" not in evaluate(plain, data)
    assert "codebook_perplexity" in columns([metrics])


def test_the_probes_are_fitted_on_a_seeded_sample_of_the_training_codes_where_there_are_more(digits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    model = build_model(model_config("ae", digits.shape, code_dim=4, hidden=(16,)))
    test_codes = codes(model, digits.x_test)

    def fitted_on(x, y):  # fitted on all of the codes of x, scored on all of the test codes at once
        knn = KNeighborsClassifier(n_neighbors=NEIGHBOURS).fit(codes(model, x), y)
        logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(codes(model, x), y)
        return {
            name: probe.score(test_codes, digits.y_test)
            for name, probe in (("knn_accuracy", knn), ("logreg_accuracy", logreg))
        }

    assert probe_accuracies(model, digits, PROBE_EXAMPLES, NEIGHBOURS) == fitted_on(digits.x_train, digits.y_train)
    index = sample_index(len(digits.x_train), 300)
    assert len(index) == 300 and np.all(np.diff(index) > 0)
    assert probe_accuracies(model, digits, 300, NEIGHBOURS) == fitted_on(digits.x_train[index], digits.y_train[index])
    assert probe_accuracies(model, digits, 300, NEIGHBOURS, seed=1) != probe_accuracies(model, digits, 300, NEIGHBOURS)


# --- batches and the model's mode -----------------------------------------------------------------------------------


def test_batches_cut_rows_and_hand_them_over_as_the_model_takes_them():
    model = nn.Linear(3, 1).double()
    pixels = np.arange(30, dtype=np.uint8).reshape(10, 3)
    got = list(batches(pixels, 4, model))
    assert [len(b) for b in got] == [4, 4, 2] and all(b.dtype == torch.float64 for b in got)
    torch.testing.assert_close(torch.cat(got), torch.from_numpy(pixels / 255))
    tensor = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(torch.cat(list(batches(tensor, 2, model))), tensor.double())
    prepared = list(batches(np.ones((5, 3), np.float32), 2, model, prepare=lambda block: block * 2))
    assert [b.tolist() for b in prepared][-1] == [[2.0, 2.0, 2.0]]


def test_evaluation_puts_back_the_mode_of_every_submodule(digits):
    model = build_model(model_config("vae", digits.shape, code_dim=2, hidden=(8,)))
    model.train()
    model.decoder.eval()  # a mixed state, as fine-tuning with a frozen part leaves it
    modes = {name: m.training for name, m in model.named_modules()}
    x = digits.x_test[:50]
    reconstruction_metrics(model, x)
    negative_elbo(model, x)
    importance_weighted_nll(model, x, 2)
    in_batches(model, "encode", x)
    mean_loss(model, x)
    evaluate(model, digits)
    assert {name: m.training for name, m in model.named_modules()} == modes
    with pytest.raises(RuntimeError), evaluating(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("inside")
    assert {name: m.training for name, m in model.named_modules()} == modes
