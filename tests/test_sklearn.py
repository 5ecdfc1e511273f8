"""The scikit-learn estimators: scikit-learn's own estimator checks, then pipelines, grid search, pickling,
reproducibility, a real-valued and a [0, 1] dataset, and bad input and hyper-parameters."""

import copy
import math
import os
import pickle
import re
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch.distributions import Normal, kl_divergence

from aekit.errors import AekitError
from aekit.evaluation.measures import importance_weighted_nll
from aekit.models import FAMILIES, NetConfig
from aekit.sklearn import (
    AdversarialAutoEncoder,
    AutoEncoder,
    DenoisingAutoEncoder,
    DropoutAutoEncoder,
    ParameterError,
    VariationalAutoEncoder,
    VariationalAutoEncoderOutlierDetector,
    outlier_detector,
)
from aekit.sklearn import (
    estimator as estimator_of,
)
from aekit.training.trainer import mean_loss

CLASSES = (AutoEncoder, DenoisingAutoEncoder, DropoutAutoEncoder, AdversarialAutoEncoder, VariationalAutoEncoder)


def small(cls, **params):
    """Tiny nets and two epochs: enough for the checks, which test the contract rather than the fit."""
    sizes = {"discriminator_hidden_layer_sizes": (8,)} if cls is AdversarialAutoEncoder else {}
    return cls(**{"max_iter": 2, "hidden_layer_sizes": (8,), **sizes, **params})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wine():
    return load_wine().data  # 178 x 13, real-valued, features on scales from 0.1 to 1,000


@pytest.fixture(scope="module")
def digits01():
    return load_digits().data / 16  # 1,797 x 64 intensities in [0, 1]


# Every check check_estimator runs, none marked as expected to fail. check_array_api_input skips here (scipy was
# imported without SCIPY_ARRAY_API=1) and runs in test_array_api_check_with_dispatch_on instead.
@parametrize_with_checks([small(cls) for cls in CLASSES])
def test_estimator_checks(estimator, check):
    check(estimator)


# Public checks scikit-learn runs on its own transformers but check_estimator does not yield (set_output, feature
# names, data frames).
EXTRA_CHECKS = (
    "check_dataframe_column_names_consistency",
    "check_get_feature_names_out_error",
    "check_set_output_transform",
    "check_set_output_transform_pandas",
    "check_global_output_transform_pandas",
    "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
    "check_requires_y_none",
    "check_inplace_ensure_writeable",
)


# The set_output checks mix data frames and arrays on purpose; scikit-learn's warning about it is expected there.
@pytest.mark.filterwarnings("ignore:X (does not have valid|has) feature names:UserWarning")
@pytest.mark.parametrize("check", EXTRA_CHECKS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_transformer_checks_beyond_check_estimator(cls, check):
    getattr(estimator_checks, check)(cls.__name__, small(cls))


@pytest.mark.slow
def test_array_api_check_with_dispatch_on():
    """check_array_api_input needs SCIPY_ARRAY_API=1 before scipy is imported, so it runs in a fresh process."""
    script = textwrap.dedent("""
        import torch
        from sklearn.utils.estimator_checks import check_array_api_input
        import aekit.sklearn as ak
        torch.set_num_threads(1)
        for name in ("AutoEncoder", "DenoisingAutoEncoder", "DropoutAutoEncoder", "AdversarialAutoEncoder",
                     "VariationalAutoEncoder"):
            check_array_api_input(name, getattr(ak, name)(max_iter=2, hidden_layer_sizes=(8,)),
                                  array_namespace="numpy", expect_only_array_outputs=False)
        print("passed")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SCIPY_ARRAY_API": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "passed", done.stderr[-2000:]


def gaussian_log_likelihood(estimator, X) -> float:
    """By hand: the mean over rows of log N(x; reconstruction, 1/2) per standardized feature, in nats, minus the sum
    of the log-scales (the change of variables back to the units of X)."""
    reconstruction = estimator.inverse_transform(estimator.transform(X))
    scaler = estimator.scaler_
    if scaler is None:
        return Normal(torch.as_tensor(reconstruction), math.sqrt(0.5)).log_prob(torch.as_tensor(X)).sum(1).mean().item()
    standardized, back = torch.as_tensor(scaler.transform(X)), torch.as_tensor(scaler.transform(reconstruction))
    return Normal(back, math.sqrt(0.5)).log_prob(standardized).sum(1).mean().item() - np.log(scaler.scale_).sum()


def test_real_valued_data_gets_squared_error_on_standardized_features(wine):
    ae = AutoEncoder(n_components=2, max_iter=30, random_state=0).fit(wine)
    assert ae.loss_ == "mse" and ae.scaler_ is not None
    codes = ae.transform(wine)
    reconstruction = ae.inverse_transform(codes)
    assert codes.shape == (178, 2) and reconstruction.shape == wine.shape and reconstruction.dtype == np.float64
    # inverse_transform returns the original units: proline (about 750) comes back near its own scale
    assert abs(reconstruction[:, 12].mean() - wine[:, 12].mean()) < 0.2 * wine[:, 12].std()
    standardized, back = ae.scaler_.transform(wine), ae.scaler_.transform(reconstruction)
    sse = ((standardized - back) ** 2).sum(1).mean()
    # score: the average log-likelihood in the units of X, as PCA's; the same density written in those units
    assert ae.score(wine) == pytest.approx(gaussian_log_likelihood(ae, wine), rel=1e-6)
    in_units = Normal(torch.as_tensor(reconstruction), math.sqrt(0.5) * torch.as_tensor(ae.scaler_.scale_))
    assert ae.score(wine) == pytest.approx(in_units.log_prob(torch.as_tensor(wine)).sum(1).mean().item(), rel=1e-6)
    pca = make_pipeline(StandardScaler(), PCA(n_components=2)).fit(wine)
    pca_sse = ((standardized - pca[0].transform(pca.inverse_transform(pca.transform(wine)))) ** 2).sum(1).mean()
    assert sse < pca_sse  # the mean alone would leave 13 per row; PCA with 2 components about 5.8

    raw = AutoEncoder(n_components=2, max_iter=2, standardize=False, random_state=0).fit(wine)
    assert raw.loss_ == "mse" and raw.scaler_ is None
    assert raw.score(wine) == pytest.approx(gaussian_log_likelihood(raw, wine), rel=1e-6)
    with pytest.raises(ValueError, match=r"cross-entropy loss needs values in \[0, 1\]"):
        AutoEncoder(loss="bce").fit(wine)


def test_unit_interval_data_gets_cross_entropy_and_the_vae_scores_its_elbo(digits01):
    vae = VariationalAutoEncoder(n_components=2, hidden_layer_sizes=(64,), max_iter=15, beta=4.0, random_state=0).fit(
        digits01
    )
    assert vae.loss_ == "bce" and vae.scaler_ is None
    assert vae.n_iter_ == 15 and vae.loss_curve_[-1] < vae.loss_curve_[0]
    reconstruction = vae.inverse_transform(vae.transform(digits01))
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1  # the Bernoulli mean
    parts = mean_loss(copy.deepcopy(vae.model_).double(), torch.as_tensor(digits01))  # as score computes it
    # the ELBO weighs the KL term by 1 whatever beta was trained with; the training objective weighs it by beta
    assert vae.score(digits01) == pytest.approx(-(parts["reconstruction"] + parts["kl"]))
    assert vae.score(digits01) > -parts["loss"] and vae.score(digits01) < 0
    # a lower bound on the average log-likelihood: below the importance-weighted estimate of log p(x)
    estimate = importance_weighted_nll(copy.deepcopy(vae.model_).double(), torch.as_tensor(digits01), k=100)
    assert vae.score(digits01) < -estimate.nll.mean()
    untrained = VariationalAutoEncoder(n_components=2, hidden_layer_sizes=(64,), max_iter=1, random_state=0)
    assert untrained.fit(digits01).score(digits01) < vae.score(digits01)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.score(digits01 * 16)  # cross-entropy is no measure for values outside [0, 1]

    ae = small(AutoEncoder, random_state=0).fit(digits01)
    p = ae.inverse_transform(ae.transform(digits01))
    cross_entropy = -(digits01 * np.log(p) + (1 - digits01) * np.log1p(-p)).sum(1).mean()
    assert ae.loss_ == "bce" and ae.score(digits01) == pytest.approx(-cross_entropy, rel=1e-6)

    standardized = small(AutoEncoder, loss="mse").fit(digits01)
    assert standardized.loss_ == "mse" and standardized.scaler_ is not None
    assert np.isfinite(standardized.transform(digits01)).all()  # constant (all-zero) pixels are left unscaled


def test_the_vaes_score_is_its_elbo_with_proper_densities_in_the_units_of_x(wine):
    vae = VariationalAutoEncoder(n_components=2, max_iter=30, random_state=0).fit(wine)
    model, x = copy.deepcopy(vae.model_).double(), torch.as_tensor(vae.scaler_.transform(wine))
    log_scale = np.log(vae.scaler_.scale_).sum()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)  # score's one seeded draw of z per row
        mu, logvar = model.posterior(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = mu + q.scale * torch.randn(mu.shape, dtype=mu.dtype)
        elbo = Normal(model.decoder(z), math.sqrt(0.5)).log_prob(x).sum(1) - kl_divergence(q, Normal(0.0, 1.0)).sum(1)
    assert vae.score(wine) == pytest.approx(elbo.mean().item() - log_scale, rel=1e-6)
    estimate = importance_weighted_nll(model, x, k=200)
    assert vae.score(wine) < -estimate.nll.mean() - log_scale  # a lower bound on the average log-likelihood


def test_scores_are_log_likelihoods_of_the_same_order_as_pcas(wine):
    x = StandardScaler().fit_transform(wine)  # standardized beforehand: the scores are in the same units
    pca = PCA(n_components=2).fit(x).score(x)  # about -16 nats per row
    for estimator in (
        AutoEncoder(n_components=2, max_iter=30, standardize=False, random_state=0),
        VariationalAutoEncoder(n_components=2, max_iter=30, standardize=False, random_state=0),
    ):
        score = estimator.fit(x).score(x)
        assert 3 * pca < score < pca / 3, (type(estimator).__name__, score, pca)  # both negative, within a factor 3


@pytest.mark.parametrize(
    "cls, options, seen",
    [
        (DenoisingAutoEncoder, {"noise": "masking", "noise_level": 0.5}, lambda m: (m.noise, m.noise_level)),
        (
            DropoutAutoEncoder,
            {"dropout": 0.4, "input_dropout": 0.3},
            lambda m: [layer.p for layer in m.encoder if isinstance(layer, torch.nn.Dropout)][:2],
        ),
        (
            AdversarialAutoEncoder,
            {"prior": "uniform", "discriminator_hidden_layer_sizes": (8, 4)},
            lambda m: (m.prior, m.discriminator[0].out_features, m.discriminator[2].out_features),
        ),
        (VariationalAutoEncoder, {"beta": 0.5}, lambda m: m.beta),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_each_family_passes_its_own_options_to_the_model(cls, options, seen, wine):
    model = small(cls, **options).fit(wine).model_
    assert (
        seen(model)
        == {
            DenoisingAutoEncoder: ("masking", 0.5),
            DropoutAutoEncoder: [0.3, 0.4],
            AdversarialAutoEncoder: ("uniform", 8, 4),
            VariationalAutoEncoder: 0.5,
        }[cls]
    )


def test_pipeline_after_standard_scaler_and_grid_search_by_score(wine):
    pipeline = make_pipeline(StandardScaler(), VariationalAutoEncoder(n_components=2, max_iter=5, random_state=0))
    assert pipeline.fit_transform(wine).shape == (178, 2)
    assert np.isfinite(pipeline.score(wine))
    search = GridSearchCV(AutoEncoder(max_iter=30, random_state=0), {"n_components": [1, 6]}, cv=3).fit(wine)
    assert search.best_params_ == {"n_components": 6}  # six components reconstruct held-out rows better than one
    assert search.best_estimator_.transform(wine).shape == (178, 6)


def test_clone_gives_an_unfitted_twin(wine):
    fitted = VariationalAutoEncoder(n_components=3, beta=2.0, max_iter=2, random_state=1).fit(wine)
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params() and not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.transform(wine)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_pickle_and_joblib_round_trips_give_identical_codes(cls, wine, tmp_path):
    fitted = small(cls, random_state=0).fit(wine)
    pickled = pickle.dumps(fitted)
    assert b"torch" not in pickled  # weights travel as numpy arrays, without torch's device tags
    joblib.dump(fitted, tmp_path / "model.joblib")
    for loaded in (pickle.loads(pickled), joblib.load(tmp_path / "model.joblib")):
        assert np.array_equal(loaded.transform(wine), fitted.transform(wine))
        assert loaded.score(wine) == fitted.score(wine)


def test_a_model_trained_on_a_gpu_unpickles_on_a_cpu_only_machine(wine, monkeypatch):
    fitted = small(VariationalAutoEncoder, random_state=0, device="cpu").fit(wine)
    state = fitted.__getstate__()
    state["model_"] = ("cuda:0", state["model_"][1])  # as pickled by a fit on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = VariationalAutoEncoder.__new__(VariationalAutoEncoder)
    loaded.__setstate__(state)
    assert next(loaded.model_.parameters()).device.type == "cpu"
    assert np.array_equal(loaded.transform(wine), fitted.transform(wine))


def test_same_seed_same_output_and_the_callers_rng_untouched(wine):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = small(VariationalAutoEncoder, random_state=0).fit_transform(wine)
    again = pickle.loads(pickle.dumps(small(VariationalAutoEncoder, random_state=0).fit(wine))).transform(wine)
    assert torch.equal(torch.get_rng_state(), before)  # neither fitting nor unpickling moved the global stream
    assert np.array_equal(first, again)
    assert not np.allclose(first, small(VariationalAutoEncoder, random_state=1).fit_transform(wine))


def test_pandas_output_and_feature_names():
    frame = load_wine(as_frame=True).data
    vae = small(VariationalAutoEncoder, n_components=3).set_output(transform="pandas").fit(frame)
    codes = vae.transform(frame)
    assert list(codes.columns) == ["variationalautoencoder0", "variationalautoencoder1", "variationalautoencoder2"]
    assert codes.index.equals(frame.index) and list(vae.feature_names_in_) == list(frame.columns)
    assert list(vae.get_feature_names_out()) == list(codes.columns)


def _raised(action) -> Exception:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - the test compares whatever is raised
        return error
    pytest.fail("nothing was raised")


X3 = np.random.default_rng(0).uniform(size=(20, 3))
NAN = np.where(np.arange(60).reshape(20, 3) == 7, np.nan, X3)


@pytest.mark.parametrize(
    "action, message",
    [
        (lambda est: est.fit(NAN), r"Input X contains NaN"),
        (lambda est: est.fit(np.where(NAN != NAN, np.inf, NAN)), r"Input X contains infinity"),
        (lambda est: est.fit(X3[:, 0]), r"Expected 2D array, got 1D array instead"),
        (lambda est: est.fit(X3[:0]), r"Found array with 0 sample\(s\)"),
        (lambda est: est.fit(X3).transform(X3[:, :2]), r"X has 2 features, but \w+ is expecting 3 features as input"),
        (lambda est: est.fit(X3).transform(X3[0]), r"Expected 2D array, got 1D array instead"),
        (lambda est: est.fit(X3).transform(NAN), r"Input X contains NaN"),
        (lambda est: est.transform(X3), r"not fitted yet"),
    ],
    ids=["nan", "inf", "1d", "empty", "wrong-features", "1d-transform", "nan-transform", "unfitted"],
)
def test_bad_input_raises_what_pca_raises(action, message):
    ours, pcas = _raised(lambda: action(small(AutoEncoder, n_components=1))), _raised(lambda: action(PCA(1)))
    assert type(ours) is type(pcas)
    assert re.search(message, str(ours)), str(ours)


def test_bad_codes_and_sparse_input():
    fitted = small(AutoEncoder, n_components=2).fit(X3)
    with pytest.raises(ValueError, match=r"X has 3 columns, but AutoEncoder.inverse_transform expects codes of 2"):
        fitted.inverse_transform(X3)
    with pytest.raises(TypeError, match="dense data is required"):
        small(AutoEncoder).fit(sparse.csr_matrix(X3))


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"n_components": 0}, ValueError, r"n_components == 0, must be >= 1"),
        ({"n_components": 2.5}, TypeError, r"n_components must be an instance of int"),
        ({"max_iter": 0}, ValueError, r"max_iter == 0, must be >= 1"),
        ({"hidden_layer_sizes": (8, 0)}, ValueError, r"hidden_layer_sizes == 0, must be >= 1"),
        ({"learning_rate": -1.0}, ParameterError, r"learning_rate=-1.0 must be a positive number"),
        ({"loss": "hinge"}, ValueError, r"unknown loss 'hinge'; use auto, bce or mse"),
        ({"device": "tpu"}, ParameterError, r"unknown device 'tpu'"),
        ({"noise": "pink"}, ParameterError, r"unknown noise 'pink'; use one of gaussian, masking, salt-and-pepper"),
        ({"validation_fraction": 1.5}, ParameterError, r"validation_fraction 1.5 must be None or a fraction in"),
        ({"validation_fraction": True}, ParameterError, r"validation_fraction True must be None or a fraction"),
        ({"early_stopping": True}, ParameterError, r"early_stopping needs rows held out to judge on; set validation"),
        ({"early_stopping": "yes"}, ParameterError, r"early_stopping 'yes' must be True or False"),
        ({"validation_fraction": 0.99}, ParameterError, r"0.99 of n_samples=20 leaves no row to train on; give more"),
    ],
)
def test_bad_hyper_parameters_raise_at_fit_naming_the_fix(params, error, message):
    cls = DenoisingAutoEncoder if "noise" in params else AutoEncoder
    estimator = small(cls, **params)  # stored unchanged, checked at fit as scikit-learn does
    with pytest.raises(error, match=message):
        estimator.fit(X3)
    assert not hasattr(estimator, "model_")
    assert issubclass(ParameterError, AekitError) and issubclass(ParameterError, ValueError)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_more_components_than_features_is_refused_at_fit_as_pca_refuses_it(cls):
    with pytest.raises(ValueError):
        PCA(n_components=4).fit(X3)
    estimator = small(cls, n_components=4)
    with pytest.raises(
        ParameterError,
        match=r"a code of 4 values is larger than the 3 values of one example; set n_components to at most 3",
    ):
        estimator.fit(X3)
    assert not hasattr(estimator, "model_")
    assert small(cls, n_components=3, random_state=0).fit(X3).transform(X3).shape == (20, 3)  # as many: accepted


def test_early_stopping_keeps_the_epoch_of_least_held_out_loss():
    """A wide net trained long on 40 rows of noise learns them by heart: the held-out loss turns up. With
    early_stopping the weights kept are those of its least, without it the last epoch's; each measured again here on
    the held-out rows (drawn as fit draws them, from random_state's seed)."""
    noise = np.random.default_rng(0).normal(size=(40, 13))
    estimator = AutoEncoder(n_components=4, hidden_layer_sizes=(256,), max_iter=100, batch_size=8, random_state=0)
    estimator.set_params(validation_fraction=0.25, early_stopping=True).fit(noise)
    curve = estimator.validation_loss_curve_
    assert len(curve) == len(estimator.loss_curve_) == 100 and estimator.best_iter_ == int(np.argmin(curve)) + 1
    assert estimator.best_iter_ < 50 and curve[-1] > 1.1 * min(curve)  # it overfit, and the best epoch came early
    seed = np.random.RandomState(0).randint(2**31 - 1)
    held = np.sort(np.random.default_rng(seed).permutation(len(noise))[:10])
    np.testing.assert_array_equal(estimator.validation_rows_, held)
    x = torch.tensor(estimator.scaler_.transform(noise[held]), dtype=torch.float32)
    assert mean_loss(estimator.model_, x)["loss"] == pytest.approx(min(curve), rel=1e-5)
    last = clone(estimator).set_params(early_stopping=False).fit(noise)
    assert not hasattr(last, "best_iter_") and last.validation_loss_curve_ == pytest.approx(curve)
    assert mean_loss(last.model_, x)["loss"] == pytest.approx(curve[-1], rel=1e-5)
    every_row = clone(estimator).set_params(validation_fraction=None, early_stopping=False).fit(noise)
    assert not any(hasattr(every_row, name) for name in ("validation_rows_", "validation_loss_curve_", "best_iter_"))


def test_a_rows_code_does_not_depend_on_its_batch(wine):
    """float32 kernels round one row and 178 rows differently (by up to 5e-7 here with the default 256-128 net, more
    than scikit-learn's subset-invariance check allows), so transform computes in float64, which agrees to 1e-15."""
    ae = AutoEncoder(max_iter=10, random_state=0).fit(wine)
    one_by_one = np.concatenate([ae.transform(row[None]) for row in wine])
    np.testing.assert_allclose(one_by_one, ae.transform(wine), rtol=1e-12, atol=1e-12)
    assert ae.model_.encoder[1].weight.dtype == torch.float32  # while the model itself stays float32


def test_numpys_integers_are_taken_wherever_an_int_is(wine):
    plain = small(VariationalAutoEncoder, n_components=2, batch_size=32, iw_samples=2, random_state=0).fit(wine)
    numpys = small(
        VariationalAutoEncoder,
        n_components=np.int64(2),
        max_iter=np.int32(2),
        batch_size=np.int64(32),
        hidden_layer_sizes=np.array([8]),
        iw_samples=np.int16(2),
        random_state=np.int64(0),
    ).fit(wine)
    assert numpys.spec_ == plain.spec_ and type(numpys.spec_.code_dim) is int and type(numpys.spec_.iw_samples) is int
    assert np.array_equal(numpys.transform(wine), plain.transform(wine))
    search = GridSearchCV(small(AutoEncoder, random_state=0), {"n_components": np.arange(1, 3)}, cv=2).fit(wine)
    assert search.best_estimator_.transform(wine).shape[1] == search.best_params_["n_components"]
    detector = small(VariationalAutoEncoderOutlierDetector, anomaly_score="nll_is", nll_samples=np.int64(3))
    assert detector.fit(wine).score_samples(wine[:4]).shape == (4,)


@pytest.mark.parametrize(
    "make, fit_on, words",
    [
        (lambda: small(AutoEncoder, loss="bce"), 3, "use loss='mse' or rescale the data"),
        (lambda: small(VariationalAutoEncoder, beta=2.0, objective="iwae"), 1, "leave it at 1 or use objective='elbo'"),
        (lambda: small(estimator_of("vqvae"), n_components=3, embedding_dim=2), 1, "use embedding_dim=1 or a divisor"),
        (lambda: small(AutoEncoder, max_iter=1, n_components=20), 1, "set n_components to at most 13"),
        (lambda: small(DenoisingAutoEncoder, noise_level=-1.0), 1, "noise_level=-1.0 must be >= 0"),
    ],
)
def test_errors_name_the_estimators_parameters_not_the_command_lines_flags(wine, make, fit_on, words):
    with pytest.raises(ValueError, match=re.escape(words)) as raised:
        make().fit(wine / wine.max() * fit_on)
    assert "--" not in str(raised.value)
    fitted = small(AutoEncoder, loss="bce").fit(wine / wine.max())
    with pytest.raises(ValueError, match=re.escape("use loss='mse' or rescale the data")):
        fitted.score(wine)


NET_FAMILIES = [name for name, config in FAMILIES.items() if issubclass(config, NetConfig)]


@pytest.mark.parametrize("name", NET_FAMILIES)
def test_every_familys_estimator_and_detector_pickle_fitted_or_not(name, wine):
    for cls in (estimator_of(name), outlier_detector(name)):
        assert pickle.loads(pickle.dumps(cls)) is cls
        unfitted = small(cls, n_components=2, random_state=0)
        assert pickle.loads(pickle.dumps(unfitted)).get_params() == unfitted.get_params()
        fitted = unfitted.fit(wine)
        loaded = pickle.loads(pickle.dumps(fitted))
        assert type(loaded) is cls and np.array_equal(loaded.transform(wine), fitted.transform(wine))


def _fitted_codes(model, x):
    return model.fit(x).transform(x)


@pytest.mark.slow
def test_the_estimators_of_families_without_a_class_here_go_to_joblibs_worker_processes(wine):
    models = [
        small(estimator_of("vqvae"), n_components=2, random_state=0),
        small(outlier_detector("rd-ae"), random_state=0),
    ]
    codes = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_fitted_codes)(model, wine) for model in models)
    for model, there in zip(models, codes):
        np.testing.assert_allclose(there, _fitted_codes(model, wine), rtol=1e-5, atol=1e-6)


def test_a_model_too_large_to_train_is_refused_naming_the_parameters_and_the_memory(wine):
    estimator = small(AutoEncoder, hidden_layer_sizes=(10**6, 10**6), device="cpu")
    with pytest.raises(
        ParameterError, match=r"^hidden_layer_sizes=\(1000000, 1000000\) and n_components=2 make a model "
    ):
        estimator.fit(wine)
    with pytest.raises(ParameterError, match=r"GiB of float32 on cpu to train it .*; use smaller sizes$"):
        estimator.fit(wine)
    assert not hasattr(estimator, "model_")
