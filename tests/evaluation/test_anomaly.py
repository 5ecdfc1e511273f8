"""Anomaly scores (aekit.evaluation.anomaly), the scikit-learn outlier detectors, `aekit score` and one-class training
(`--normal-class`) with the AUROC in the report."""

import copy
import csv
import json
import math
import pickle
import re

import numpy as np
import pytest
import torch
from helpers import assert_refused, run_cli
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch.distributions import Normal

import aekit
from aekit.cli import main
from aekit.data import Dataset
from aekit.data.dataset import with_normal_training
from aekit.errors import AekitError, DataError
from aekit.evaluation.anomaly import anomalous, anomaly_scores, roc, score_names
from aekit.models import build_model, model_config
from aekit.sklearn import (
    AdversarialAutoEncoderOutlierDetector,
    AutoEncoderOutlierDetector,
    DenoisingAutoEncoderOutlierDetector,
    DropoutAutoEncoderOutlierDetector,
    ParameterError,
    VariationalAutoEncoderOutlierDetector,
    outlier_detector,
)
from aekit.sklearn.autoencoders import table_sizes
from aekit.training.trainer import TrainSettings

DETECTORS = (
    AutoEncoderOutlierDetector,
    DenoisingAutoEncoderOutlierDetector,
    DropoutAutoEncoderOutlierDetector,
    AdversarialAutoEncoderOutlierDetector,
    VariationalAutoEncoderOutlierDetector,
)
FAST = ["--epochs", "3", "--no-progress", "--hidden", "32", "--code-dim", "4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(cls, **params):
    sizes = {"discriminator_hidden_layer_sizes": (8,)} if cls is AdversarialAutoEncoderOutlierDetector else {}
    return cls(**{"max_iter": 2, "hidden_layer_sizes": (8,), **sizes, **params})


def trained(name: str, data: Dataset, epochs: int = 30, **fields):
    torch.manual_seed(0)
    likelihood = "gaussian" if name == "pca" else "bernoulli"
    model = build_model(model_config(name, data.shape, likelihood=likelihood, code_dim=4, **fields))
    aekit.train(model, data, TrainSettings(epochs=epochs, batch_size=16), progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def zeros_only(digits):
    return with_normal_training(digits, (0,))


@pytest.mark.parametrize("name", ["pca", "ae", "vae"])
def test_scores_are_higher_for_other_digits_and_noise_than_for_the_digit_trained_on(name, zeros_only):
    model = trained(name, zeros_only)
    noise = np.random.default_rng(0).uniform(size=(5, 1, 8, 8)).astype(np.float32)
    x = np.concatenate([zeros_only.x_test, noise])
    truth = np.concatenate([anomalous(zeros_only.y_test, (0,)), np.ones(5, bool)])
    assert score_names(model) == (
        ("reconstruction_nll", "neg_elbo", "nll_is") if name == "vae" else ("reconstruction_nll",)
    )
    for score in score_names(model):
        scores = anomaly_scores(model, x, score, samples=20)
        assert scores.dtype == np.float64 and scores.shape == (len(x),)
        assert roc(scores, truth).auroc > 0.9, score  # the other nine digits score higher than the zeros
        assert scores[-5:].min() > scores[:-5][~truth[:-5]].max(), score  # noise above every test zero


def test_the_reconstruction_nll_is_the_gaussians_density_in_the_datas_units():
    wine = load_wine().data.astype(np.float32)
    data = Dataset("wine", wine[:140], wine[140:], None, None, binary=False)
    torch.manual_seed(0)
    model = build_model(model_config("ae", data.shape, likelihood="gaussian", standardize=True, code_dim=2))
    aekit.train(model, data, TrainSettings(epochs=5, batch_size=16), progress=False)
    reconstruction = torch.as_tensor(model.reconstruct(data.x_test), dtype=torch.float64)
    scale = model.standardize.scale.double()
    by_hand = -Normal(reconstruction, math.sqrt(0.5) * scale).log_prob(torch.as_tensor(data.x_test).double()).sum(1)
    np.testing.assert_allclose(anomaly_scores(model, data.x_test), by_hand.numpy(), rtol=1e-4)


def test_the_vaes_scores_depend_on_the_example_alone_and_the_estimate_is_below_the_bound(zeros_only):
    vae = trained("vae", zeros_only, epochs=3)
    x = zeros_only.x_test
    elbo = anomaly_scores(vae, x, "neg_elbo", samples=30)
    nll = anomaly_scores(vae, x, "nll_is", samples=30)
    assert (nll <= elbo + 1e-9).all()  # log of a mean >= mean of logs, draw by draw the same samples
    np.testing.assert_allclose(anomaly_scores(vae, x[7:9], "nll_is", samples=30), nll[7:9], rtol=1e-6)
    with pytest.raises(AekitError, match="unknown anomaly score 'neg_elbo' for a AutoEncoder"):
        anomaly_scores(trained("ae", zeros_only, epochs=1), x, "neg_elbo")
    with pytest.raises(AekitError, match="whole number >= 1"):
        anomaly_scores(vae, x, "nll_is", samples=0)


def test_anomaly_scores_take_any_layout_of_the_models_size_and_refuse_what_the_apps_refuse(zeros_only):
    ae = trained("ae", zeros_only, epochs=1)
    x = zeros_only.x_test[:6]  # (6, 1, 8, 8) intensities in [0, 1]
    expected = anomaly_scores(ae, x)
    for layout in (x[:, 0], x.reshape(6, 64), x.transpose(0, 2, 3, 1), x.tolist()):
        np.testing.assert_allclose(anomaly_scores(ae, layout), expected, rtol=1e-6)
    pixels = (x * 255).round().astype(np.uint8)  # 8-bit intensities, divided by 255
    np.testing.assert_allclose(anomaly_scores(ae, pixels), anomaly_scores(ae, pixels / 255), rtol=1e-6)
    nan = x.copy()
    nan[2, 0, 3, 3] = np.nan
    for bad, message in (
        (x[:, 0, :4], "x holds examples of size 4x8 but the model takes 8x8 (1 channel)"),
        (pixels.astype(np.float32), "x holds values in [0, 255] but the run models [0, 1] intensities"),
        (nan, "x holds NaN or infinite values"),
        (x[:0], "x holds no examples"),
        (np.full((6, 64), "a"), "x holds <U1 values, not numbers"),
    ):
        with pytest.raises(DataError, match=re.escape(message)):
            anomaly_scores(ae, bad)
    with pytest.raises(DataError, match=re.escape("photos.npy holds NaN")):
        anomaly_scores(trained("vae", zeros_only, epochs=1), nan, "nll_is", samples=2, source="photos.npy")


# Every check check_estimator runs for an outlier detector (and the transformer checks: they transform too).
@parametrize_with_checks([small(cls) for cls in DETECTORS] + [small(DETECTORS[-1], anomaly_score="nll_is")])
def test_outlier_detector_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def wine():
    return load_wine().data


@pytest.mark.parametrize("contamination", [0.05, 0.2, 0.5])
def test_contamination_sets_the_share_of_training_rows_called_outliers(contamination, wine):
    detector = small(AutoEncoderOutlierDetector, contamination=contamination, random_state=0).fit(wine)
    flagged = (detector.predict(wine) == -1).mean()
    assert abs(flagged - contamination) <= 1 / len(wine)
    scores = detector.score_samples(wine)
    np.testing.assert_allclose(detector.decision_function(wine), scores - detector.offset_)
    assert detector.offset_ == pytest.approx(np.percentile(scores, 100 * contamination))


@pytest.mark.parametrize("score", ["reconstruction_and_code", "reconstruction_nll"])
@pytest.mark.parametrize("held_out", [0.1, None])
def test_auto_contamination_is_tukeys_fence_of_the_held_out_rows(score, held_out, wine):
    detector = small(AutoEncoderOutlierDetector, anomaly_score=score, validation_fraction=held_out, random_state=0)
    detector.fit(wine)
    rows = detector.validation_rows_ if held_out else np.arange(len(wine))
    assert len(rows) == (18 if held_out else 178) and not hasattr(detector, "best_iter_")
    q1, q3 = np.percentile(detector.score_samples(wine[rows]), [25, 75])
    assert detector.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert set(np.unique(detector.predict(wine))) <= {-1, 1}


def test_reconstruction_nll_scores_are_log_likelihoods(wine):
    detector = small(AutoEncoderOutlierDetector, anomaly_score="reconstruction_nll", random_state=0).fit(wine)
    # score is their mean, as for PCA
    assert detector.score_samples(wine).mean() == pytest.approx(detector.score(wine), rel=1e-9)


@pytest.mark.parametrize("cls", [AutoEncoderOutlierDetector, VariationalAutoEncoderOutlierDetector])
def test_the_default_score_adds_the_reconstruction_error_and_the_code_distance_each_over_its_median(cls, wine):
    detector = small(cls, random_state=0).fit(wine)
    model = copy.deepcopy(detector.model_).double()
    x = torch.from_numpy(detector.scaler_.transform(wine))
    with torch.no_grad():
        codes = model.encode(x)
        errors = ((model.decoder_output(codes) - x) ** 2).sum(1).numpy()
    codes = codes.numpy()
    trained = np.delete(np.arange(len(wine)), detector.validation_rows_)  # the statistics: the rows trained on
    centred = codes - codes[trained].mean(0)
    distances = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(codes[trained], rowvar=False)), centred)
    expected = errors / np.median(errors[trained]) + distances / np.median(distances[trained])
    np.testing.assert_allclose(-detector.score_samples(wine), expected, rtol=1e-4)
    np.testing.assert_allclose(-detector.score_samples(wine[5:7]), expected[5:7], rtol=1e-4)  # row by row


def test_the_detectors_fit_their_size_and_training_length_to_the_table(wine):
    rows, columns = wine.shape  # 178 x 13: two batches of 128 an epoch, 1,000 epochs make 2,000 steps
    detector = AutoEncoderOutlierDetector(random_state=0)
    assert detector.get_params()["n_components"] == "auto"
    sizes = table_sizes(rows, columns, 128)
    assert sizes == {"n_components": 4, "hidden_layer_sizes": (26,), "max_iter": 1000}
    assert table_sizes(80, 3, 128) == {"n_components": 2, "hidden_layer_sizes": (16,), "max_iter": 2000}
    assert table_sizes(619_326, 1555, 128) == {"n_components": 4, "hidden_layer_sizes": (256,), "max_iter": 1}
    detector.set_params(max_iter=3).fit(wine)
    assert (detector.spec_.code_dim, detector.spec_.hidden, detector.n_iter_) == (4, (26,), 3)
    assert detector.get_params()["hidden_layer_sizes"] == "auto"  # fit leaves the parameters as given
    given = AutoEncoderOutlierDetector(n_components=2, hidden_layer_sizes=(8, 4), max_iter=2).fit(wine)
    assert (given.spec_.code_dim, given.spec_.hidden, given.n_iter_) == (2, (8, 4), 2)
    in_unit_range = wine / wine.max(0)  # a table's columns are real values, even all in [0, 1]
    assert given.fit(in_unit_range).loss_ == "mse" and given.set_params(loss="auto").fit(in_unit_range).loss_ == "bce"


def test_a_pipeline_with_a_scaler_finds_the_rows_that_do_not_fit(wine):
    normal, odd = wine[:130], wine[130:].copy()
    odd[:, 12] *= 20  # proline twenty times too high
    pipeline = make_pipeline(
        StandardScaler(), VariationalAutoEncoderOutlierDetector(max_iter=30, contamination=0.05, random_state=0)
    ).fit(normal)
    assert (pipeline.predict(odd) == -1).mean() > 0.9
    assert pipeline.score_samples(odd).max() < pipeline.score_samples(normal).min()


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (AutoEncoderOutlierDetector, {"anomaly_score": "neg_elbo"}, "one of reconstruction_nll, reconstruction_and"),
        (AutoEncoderOutlierDetector, {"contamination": 0.7}, r"'auto' or a fraction in \(0, 0.5\]"),
        (AutoEncoderOutlierDetector, {"contamination": "most"}, r"'auto' or a fraction in \(0, 0.5\]"),
        (VariationalAutoEncoderOutlierDetector, {"nll_samples": 0}, "nll_samples == 0, must be >= 1"),
    ],
)
def test_bad_detection_parameters_are_refused_at_fit(cls, params, message, wine):
    detector = small(cls, **params)
    with pytest.raises(ValueError, match=message):
        detector.fit(wine)
    assert not hasattr(detector, "model_")
    assert outlier_detector("ae") is AutoEncoderOutlierDetector and issubclass(ParameterError, ValueError)


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    """A VAE trained on the zeros of digits by the command line."""
    out = tmp_path_factory.mktemp("runs") / "zeros"
    assert main(["train", "--model", "vae", "--normal-class", "0", "--out", str(out), *FAST]) == 0
    return out


def test_normal_class_trains_on_that_class_and_the_report_shows_the_auroc(zero_run, zeros_only, capsys):
    config = json.loads((zero_run / "config.json").read_text())
    metrics = json.loads((zero_run / "metrics.json").read_text())
    assert config["options"]["normal_class"] == [0]
    # the batch chosen for the zeros of the training split (10 steps an epoch), not for its 1,437 digits
    assert metrics["batch_size"] == len(zeros_only.x_train) // 10 < 1437 // 10
    assert metrics["auroc_reconstruction_nll"] > 0.8 and metrics["auroc_neg_elbo"] > 0.8
    # the AUPRC, above what scores that tell nothing get: the share of anomalies
    assert metrics["auprc_reconstruction_nll"] > np.mean(zeros_only.y_test != 0)
    report = (zero_run / "report.html").read_text()
    assert "auroc_reconstruction_nll" in report and "roc (roc.png)" in report
    assert (zero_run / "figures" / "roc.png").is_file()
    status, out, _ = run_cli(capsys, "evaluate", str(zero_run), "--nll-samples", "10")
    assert status == 0 and 0.8 < json.loads(out)["auroc_nll_is_10"] <= 1
    assert_refused(
        capsys, zero_run, "train", "--resume", "--out", str(zero_run), "--normal-class", "1", match="normal_class"
    )


def test_normal_class_is_refused_on_unlabelled_data_and_for_unknown_classes(capsys, tmp_path, digits):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(50, 6)).astype(np.float32))
    out = tmp_path / "run"
    for dataset, classes, match in (
        (str(tmp_path / "x.npy"), "0", "needs labelled data"),
        ("digits", "12", "no training examples of that class"),
        ("digits", ",".join(map(str, range(10))), "names every class"),
    ):
        assert_refused(
            capsys,
            tmp_path,
            "train",
            "--dataset",
            dataset,
            "--normal-class",
            classes,
            "--out",
            str(out),
            *FAST,
            match=match,
        )
    filtered = with_normal_training(digits, (3, 5))
    assert set(filtered.y_train) == {3, 5} and len(filtered.x_train) == len(filtered.y_train)
    assert filtered.x_test is digits.x_test  # the test split keeps every class
    with pytest.raises(DataError, match="needs labelled data"):
        with_normal_training(Dataset("x", digits.x_train, digits.x_test, None, None, binary=True), (0,))


def test_a_normal_class_the_test_split_lacks_is_refused_before_training_and_such_a_run_says_what_to_do(
    capsys, tmp_path
):
    x = np.random.default_rng(0).uniform(size=(60, 6)).astype(np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x[:40], y_train=np.arange(40) % 3, x_test=x[40:], y_test=np.arange(20) % 2)
    out, train = tmp_path / "run", ["train", "--dataset", str(data), "--out", str(tmp_path / "run"), *FAST]
    lacking = "--normal-class 2: data.npz's test split has no examples of that class, so no AUROC can be measured; "
    assert_refused(
        capsys, tmp_path, *train, "--normal-class", "2", match=lacking + "name a class its test split holds: 0, 1"
    )
    assert not out.exists()
    # A run an older aekit trained so, which failed at its end: neither evaluate nor --resume trains or fails late.
    assert run_cli(capsys, *train, "--normal-class", "0")[0] == 0
    config = json.loads((out / "config.json").read_text())
    config["options"]["normal_class"] = [2]
    (out / "config.json").write_text(json.dumps(config))
    (out / "metrics.json").unlink()
    message = f"{out} cannot be finished or evaluated: {lacking}"
    assert_refused(capsys, tmp_path, "evaluate", str(out), match=message)
    assert_refused(capsys, tmp_path, "train", "--resume", "--out", str(out), "--no-progress", match=message)


@pytest.fixture(scope="module")
def animals(tmp_path_factory):
    """A folder of 8x8 images in subfolders cats, dogs and owls (12 each): classes with names."""
    folder = tmp_path_factory.mktemp("data") / "animals"
    rng = np.random.default_rng(0)
    for number, name in enumerate(("cats", "dogs", "owls")):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(60 + 70 * number, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def test_normal_class_takes_the_class_names_a_folder_or_a_store_gives_and_score_writes_them(animals, capsys, tmp_path):
    from aekit.data.store.writer import pack

    out = tmp_path / "dogs"
    train = ["train", "--dataset", str(animals), "--out", str(out), *FAST]
    assert_refused(capsys, tmp_path, *train, "--normal-class", "wolves", match="its classes are cats, dogs, owls")
    assert run_cli(capsys, *train, "--normal-class", "dogs")[0] == 0
    assert json.loads((out / "config.json").read_text())["options"]["normal_class"] == [1]  # recorded by number
    assert 0 <= json.loads((out / "metrics.json").read_text())["auroc_reconstruction_nll"] <= 1
    for same in ("dogs", "1"):  # a name, or the number it stands for
        assert run_cli(capsys, "train", "--resume", "--out", str(out), "--epochs", "4", "--normal-class", same)[0] == 0
    refusal = "was trained with other settings for normal_class"
    assert_refused(capsys, out, "train", "--resume", "--out", str(out), "--normal-class", "cats", match=refusal)

    store = tmp_path / "animals.store"
    pack(str(animals), store, workers=1, progress=False)
    assert aekit.load_dataset(str(store)).label_names == ("cats", "dogs", "owls")
    assert (
        run_cli(
            capsys, "train", "--dataset", str(store), "--out", str(tmp_path / "s"), *FAST, "--normal-class", "owls"
        )[0]
        == 0
    )
    assert json.loads((tmp_path / "s" / "config.json").read_text())["options"]["normal_class"] == [2]
    compare = ["compare", "--models", "pca", "--dataset", str(animals), "--out", str(tmp_path / "c"), "--no-progress"]
    for reused in ("False", "True"):  # the second reuses the first's run: its classes recorded by number
        assert run_cli(capsys, *compare, "--normal-class", "dogs", "--code-dims", "4")[0] == 0
        assert [row["reused"] for row in csv.DictReader((tmp_path / "c" / "comparison.csv").open())] == [reused]
    for source in (store, animals):
        scores = tmp_path / f"scores-of-{source.name}.csv"
        assert run_cli(capsys, "score", str(out), str(source), "--out", str(scores))[0] == 0
        rows = list(csv.DictReader(scores.open()))
        assert len(rows) == 36 and {(row["label"], row["label_name"]) for row in rows} == {
            ("0", "cats"),
            ("1", "dogs"),
            ("2", "owls"),
        }


def test_score_writes_one_score_per_example_with_the_stores_labels_and_a_histogram(zero_run, capsys, tmp_path):
    from aekit.data.store.writer import pack

    pack("digits", tmp_path / "digits.store", workers=1, progress=False)
    out = tmp_path / "scores.csv"
    status, _, err = run_cli(capsys, "score", str(zero_run), str(tmp_path / "digits.store"), "--out", str(out))
    assert status == 0 and "1797 scores written" in err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "label", "label_name", "reconstruction_nll"] and len(rows) == 1797
    assert all(row["label_name"] == row["label"] for row in rows)  # digits' classes are named by their digit
    scores, labels = np.array([float(r["reconstruction_nll"]) for r in rows]), np.array([int(r["label"]) for r in rows])
    assert np.median(scores[labels != 0]) > np.median(scores[labels == 0])
    assert (tmp_path / "scores.png").is_file()
    model = aekit.load(zero_run)
    np.testing.assert_allclose(
        scores[:5], anomaly_scores(model, aekit.load_dataset(str(tmp_path / "digits.store")).x_train[:5])
    )

    (tmp_path / "images" / "a").mkdir(parents=True)
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a" / name)
    assert run_cli(capsys, "score", str(zero_run), str(tmp_path / "images"), "--out", str(tmp_path / "i.csv"))[0] == 0
    named = list(csv.DictReader((tmp_path / "i.csv").open()))
    assert [(row["index"], row["name"]) for row in named] == [("0", "a/x.png"), ("1", "a/y.png")]

    np.save(tmp_path / "flat.npy", np.zeros((4, 64), np.uint8))  # any layout of the run's size
    status, _, _ = run_cli(
        capsys,
        "score",
        str(zero_run),
        str(tmp_path / "flat.npy"),
        "--out",
        str(tmp_path / "nll.csv"),
        "--score",
        "nll_is",
        "--nll-samples",
        "5",
    )
    assert status == 0 and list(csv.DictReader((tmp_path / "nll.csv").open()))[0].keys() == {"index", "nll_is_5"}


def test_score_refuses_bad_input_in_one_line_and_writes_nothing(zero_run, capsys, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5), np.float32))
    np.save(tmp_path / "big.npy", np.full((4, 64), 3.0, np.float32))
    np.save(tmp_path / "fine.npy", np.zeros((4, 64), np.float32))
    ae_run = tmp_path / "ae"
    assert run_cli(capsys, "train", "--model", "ae", "--out", str(ae_run), *FAST)[0] == 0
    out = str(tmp_path / "scores.csv")
    for run, source, extra, match in (
        (zero_run, "wrong.npy", [], "examples of size 5 values"),
        (zero_run, "big.npy", [], "values in [3, 3]"),
        (zero_run, "missing.npy", [], "does not exist"),
        (zero_run, "fine.npy", ["--nll-samples", "0"], "must be a whole number >= 1"),
        (ae_run, "fine.npy", ["--score", "neg_elbo"], "neg_elbo and nll_is need a VAE"),
    ):
        assert_refused(capsys, tmp_path, "score", str(run), str(tmp_path / source), "--out", out, *extra, match=match)
    assert_refused(
        capsys,
        tmp_path,
        "score",
        str(zero_run),
        str(tmp_path / "fine.npy"),
        "--out",
        str(tmp_path / "s.txt"),
        match="a .csv file",
    )


def test_a_detector_copes_with_wild_scales_constant_and_duplicated_columns(wine):
    """Each column is standardized, so a column in other units changes nothing; a constant column is learnt as
    such (a row that breaks it is the most anomalous), and a copy of a column is only one more column."""
    detector = AutoEncoderOutlierDetector(max_iter=20, random_state=0)
    scores = detector.fit(wine).score_samples(wine)
    rescaled = wine * np.logspace(-6, 9, wine.shape[1])  # micro-units to giga-units
    np.testing.assert_allclose(clone(detector).fit(rescaled).score_samples(rescaled), scores, rtol=1e-3)
    table = np.column_stack([wine, np.full(len(wine), 7.0), wine[:, 0]])  # a constant column and a copy of column 0
    fitted = clone(detector).fit(table)
    broken = table.copy()
    broken[3, -2] = 8.0  # the constant column off by one in one row
    assert np.isfinite(fitted.score_samples(table)).all()
    assert np.argmin(fitted.score_samples(broken)) == 3 and fitted.predict(broken)[3] == -1


def test_several_code_sizes_make_an_ensemble_whose_score_is_the_mean_of_its_detectors(wine):
    ensemble = AutoEncoderOutlierDetector(n_components=(2, 4), max_iter=5, random_state=0).fit(wine)
    assert [e.spec_.code_dim for e in ensemble.estimators_] == [2, 4]  # each with random_state=0, as alone
    alone = [AutoEncoderOutlierDetector(n_components=n, max_iter=5, random_state=0).fit(wine) for n in (2, 4)]
    expected = np.mean([detector.score_samples(wine) for detector in alone], axis=0)
    np.testing.assert_allclose(ensemble.score_samples(wine), expected, rtol=1e-12)
    held_out = ensemble.estimators_[1].validation_rows_
    np.testing.assert_array_equal(ensemble.estimators_[0].validation_rows_, held_out)  # all hold out the same rows
    q1, q3 = np.percentile(expected[held_out], [25, 75])
    assert ensemble.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    again = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_allclose(again.decision_function(wine), ensemble.decision_function(wine), rtol=1e-12)
    with pytest.raises(ParameterError, match=r"has no single code to transform with; call estimators_\[i\]"):
        ensemble.transform(wine)
    assert ensemble.set_params(n_components=4).fit(wine).transform(wine).shape == (178, 4)  # one size again
    assert not hasattr(ensemble, "estimators_")
    with pytest.raises(ParameterError, match=r"n_components \(4, 4\) names a code size twice"):
        clone(ensemble).set_params(n_components=(4, 4)).fit(wine)
    with pytest.raises(ParameterError, match="a code of 20 values is larger than the 13 values of one example"):
        clone(ensemble).set_params(n_components=(2, 20)).fit(wine)
