"""The likelihood: log_prob of the observation models, the importance-weighted NLL estimate, the IWAE objective and
dynamic binarization."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import MultivariateNormal, Normal

from aekit.cli import main
from aekit.data.binarize import BinarizedRows, binarize, binarized
from aekit.errors import AekitError, DataError
from aekit.evaluation import evaluate
from aekit.evaluation.measures import importance_weighted_nll, negative_elbo, reconstruction_metrics
from aekit.models import Bernoulli, Gaussian, build_model, gaussian_kl, model_config
from aekit.models.standardize import Standardize
from aekit.training.trainer import TrainSettings, mean_loss, train


class LinearGaussian(nn.Module):
    """z ~ N(0, I), x | z ~ N(W z + b, I/2) (aekit's Gaussian likelihood), so log p(x) = log N(x; b, W W^T + I/2).

    W = Q diag(s) with orthonormal columns Q keeps the true posterior diagonal: N(2 v W^T (x - b), diag(v)),
    v = 1 / (1 + 2 s^2). ``shift`` and ``widen`` move its mean and log-variance away from the truth on purpose.
    """

    likelihood = Gaussian

    def __init__(self, shift: float = 0.0, widen: float = 0.0):
        super().__init__()
        self.standardize = Standardize()  # real values taken as they are
        generator = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(6, 3, generator=generator, dtype=torch.float64))
        self.register_buffer("s", torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
        self.register_buffer("w", q * self.s)
        self.register_buffer("b", torch.randn(6, generator=generator, dtype=torch.float64))
        self.shift, self.widen = shift, widen

    def true_posterior(self, x):
        v = 1 / (1 + 2 * self.s**2)
        return 2 * ((x - self.b) @ self.w) * v, v.log().expand(len(x), 3)

    def posterior(self, x):
        mu, logvar = self.true_posterior(x)
        return mu + self.shift, logvar + self.widen

    def decoder(self, z):
        return z @ self.w.T + self.b

    def log_marginal(self, x):
        return MultivariateNormal(self.b, self.w @ self.w.T + 0.5 * torch.eye(6, dtype=torch.float64)).log_prob(x)

    def sample(self, n):
        generator = torch.Generator().manual_seed(1)
        z = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return self.decoder(z) + 0.5**0.5 * torch.randn(n, 6, generator=generator, dtype=torch.float64)


def test_log_prob_is_the_normalised_log_density():
    torch.manual_seed(0)
    out, x = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    expected = Normal(out, 0.5**0.5).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian.log_prob(out, x), expected)
    binary = (torch.rand(5, 2, 3) < 0.5).float()
    torch.testing.assert_close(Bernoulli.log_prob(out, binary), -Bernoulli.nll(out, binary))
    torch.testing.assert_close(
        Bernoulli.log_prob(out, binary), TorchBernoulli(logits=out).log_prob(binary).flatten(1).sum(1)
    )


def test_estimate_is_exact_when_the_posterior_is_the_true_one():
    model = LinearGaussian()
    x = model.sample(200)
    exact = -model.log_marginal(x).numpy()
    for k in (1, 7, 100):
        # max_rows of 3 samples per example: the log-sum-exp is carried across chunks (the last one shorter).
        estimate = importance_weighted_nll(model, x, k, batch_size=100, max_rows=300)
        np.testing.assert_allclose(estimate.nll, exact, rtol=0, atol=1e-8)
        np.testing.assert_allclose(estimate.neg_elbo, exact, rtol=0, atol=1e-8)


def test_estimate_converges_to_the_truth_from_a_wrong_posterior_and_is_seeded():
    model = LinearGaussian(shift=0.3, widen=0.4)
    x = model.sample(200)
    exact = -model.log_marginal(x).numpy()
    estimates = {k: importance_weighted_nll(model, x, k, batch_size=200, max_rows=2**17) for k in (1, 10, 5000)}
    gap = {k: (e.nll - exact).mean() for k, e in estimates.items()}
    assert gap[1] > 0.3, gap  # the ELBO of a wrong posterior is clearly below log p(x)
    assert gap[1] > gap[10] > gap[5000] > -0.01, gap
    assert abs(gap[5000]) < 0.01 and np.abs(estimates[5000].nll - exact).max() < 0.1, gap
    # -ELBO = -log p(x) + KL(q(z|x) || p(z|x)), here in closed form.
    kl = gaussian_kl(*model.posterior(x), *model.true_posterior(x)).numpy()
    assert abs(estimates[5000].neg_elbo.mean() - (exact + kl).mean()) < 0.02
    np.testing.assert_allclose(estimates[5000].neg_elbo, exact + kl, atol=0.2)
    again = importance_weighted_nll(model, x, 10, batch_size=200, max_rows=2**17)
    np.testing.assert_array_equal(again.nll, estimates[10].nll)
    other = importance_weighted_nll(model, x, 10, batch_size=200, max_rows=2**17, seed=1)
    assert not np.array_equal(other.nll, estimates[10].nll)


@pytest.fixture(scope="module")
def trained_vae(digits):
    torch.manual_seed(0)
    model = build_model(model_config("vae", digits.shape, code_dim=8, hidden=(64, 32)))
    train(model, digits, TrainSettings(epochs=8, batch_size=32, lr=3e-3), device="cpu", progress=False)
    return model


def test_bound_of_a_trained_vae_grows_with_k_and_never_falls_below_the_elbo(trained_vae, digits):
    x = digits.x_test
    estimates = {k: importance_weighted_nll(trained_vae, x, k) for k in (1, 10, 100)}
    means = {k: e.nll.mean() for k, e in estimates.items()}
    assert means[1] > means[10] > means[100], means
    for e in estimates.values():
        assert (e.nll <= e.neg_elbo + 1e-9).all()
    np.testing.assert_array_equal(estimates[1].nll, estimates[1].neg_elbo)
    closed_form = negative_elbo(trained_vae, x)
    # Two estimates of the same ELBO (Monte-Carlo KL over 100 samples, and the closed-form KL) agree.
    assert abs(estimates[100].neg_elbo.mean() - closed_form) < 0.3, (estimates[100].neg_elbo.mean(), closed_form)
    assert means[100] < closed_form - 0.1
    metrics = evaluate(trained_vae, digits, nll_samples=10)
    assert metrics["nll_is_10"] == pytest.approx(means[10])
    assert metrics["neg_elbo"] == pytest.approx(closed_form)


def test_iwae_objective_is_tighter_than_the_elbo_and_trains(trained_vae, digits):
    x = torch.from_numpy(digits.x_test)
    spec = dict(shape=digits.shape, code_dim=8, hidden=(64, 32))
    iwae = build_model(model_config("vae", objective="iwae", iw_samples=50, **spec))
    iwae.load_state_dict(trained_vae.state_dict())
    single = build_model(model_config("vae", objective="iwae", iw_samples=1, **spec))
    single.load_state_dict(trained_vae.state_dict())
    elbo = mean_loss(trained_vae, x)["loss"]
    assert mean_loss(iwae, x)["neg_iwae_bound"] < elbo - 0.1
    assert abs(mean_loss(single, x)["loss"] - elbo) < 0.5  # k = 1 is the ELBO, here with a sampled KL

    torch.manual_seed(0)
    model = build_model(model_config("vae", objective="iwae", iw_samples=5, **spec))
    history = train(model, digits, TrainSettings(epochs=4, batch_size=64), device="cpu", progress=False)
    assert history[-1]["test_loss"] < 0.8 * history[0]["test_loss"]
    metrics = evaluate(model, digits)
    # neg_elbo is the ELBO, not the (tighter) bound the model was trained on.
    assert metrics["neg_elbo"] == pytest.approx(negative_elbo(model, digits.x_test))
    assert metrics["neg_elbo"] > history[-1]["test_loss"]


@pytest.mark.parametrize(
    "options, match",
    [
        ({"model": "ae", "objective": "iwae"}, "--objective is an option of vae, not of ae"),
        ({"model": "vae", "objective": "iwae", "beta": 0.5}, "beta"),
        ({"model": "vae", "objective": "bound"}, "unknown objective"),
        ({"model": "vae", "iw_samples": 0}, "--iw-samples 0 must be at least 1"),
        ({"model": "pca", "binarize": True}, "--binarize is an option of ae, dae, dropout-ae, aae, vae, .*not of pca"),
        ({"model": "vae", "binarize": True, "likelihood": "gaussian"}, "binarize"),
    ],
)
def test_spec_refuses_inconsistent_likelihood_options(options, match):
    with pytest.raises(AekitError, match=match):
        model_config(options.pop("model"), (4,), **options)


def test_dynamic_binarization_is_seeded_and_unbiased(digits):
    x = digits.x_train
    first, again, other = binarize(x, 3), binarize(x, 3), binarize(x, 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.float32 and set(np.unique(first)) <= {0.0, 1.0}
    assert (first[x == 0] == 0).all() and (first[x == 1] == 1).all()
    assert abs(first.mean() - x.mean()) < 0.005
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        binarize(np.array([[0.5, 1.5]]), 0)
    once, twice = binarized(digits), binarized(digits)
    np.testing.assert_array_equal(once.x_test, twice.x_test)
    np.testing.assert_array_equal(once.y_test, digits.y_test)
    assert set(np.unique(once.x_train)) == {0.0, 1.0}


@pytest.mark.parametrize("shape", [(60, 7), (45, 1, 5, 5), (50, 64)], ids=["odd", "odd-image", "even"])
def test_the_fixed_draw_is_made_a_block_of_rows_at_a_time_as_it_is_read_with_the_whole_draws_values(shape):
    x = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    whole = (np.random.default_rng(9).random(shape, dtype=np.float32) < x / np.float32(255)).astype(np.float32)
    rows = BinarizedRows(x, 9)
    assert (rows.shape, rows.dtype, len(rows)) == (shape, np.float32, shape[0])
    np.testing.assert_array_equal(binarize(x, 9), whole)
    np.testing.assert_array_equal(np.asarray(rows), whole)
    for start in range(0, shape[0], 7):
        for stop in (start + 1, start + 4, start + 13, shape[0] + 5):
            np.testing.assert_array_equal(rows[start:stop], whole[start:stop])
    some = np.array([3, 4, 5, 40, 2, 2, 41, -1])
    np.testing.assert_array_equal(rows[some], whole[some])
    np.testing.assert_array_equal(rows[7], whole[7])
    np.testing.assert_array_equal(rows[1::3], whole[1::3])
    with pytest.raises(IndexError):
        rows[np.array([shape[0]])]


def test_binarize_option_draws_fresh_batches_while_training_and_scores_on_the_fixed_draw(digits):
    torch.manual_seed(0)
    model = build_model(model_config("vae", digits.shape, code_dim=4, hidden=(32,), binarize=True))
    x = torch.from_numpy(digits.x_train[:64])
    model.train()
    a, b = model.training_input(x), model.training_input(x)
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    model.eval()
    assert model.training_input(x) is x
    train(model, digits, TrainSettings(epochs=1, batch_size=64), device="cpu", progress=False)
    metrics = evaluate(model, digits)
    expected = reconstruction_metrics(model, binarized(digits).x_test)
    assert metrics["bce_per_example"] == pytest.approx(expected["bce_per_example"])


def test_cli_trains_iwae_on_binarized_data_and_estimates_the_nll(capsys, tmp_path):
    out = tmp_path / "iwae"
    status = main(
        [
            "train",
            "--model",
            "vae",
            "--objective",
            "iwae",
            "--iw-samples",
            "3",
            "--binarize",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--code-dim",
            "4",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    config = json.loads((out / "config.json").read_text())["model"]
    assert (config["objective"], config["iw_samples"], config["binarize"]) == ("iwae", 3, True)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--nll-samples", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())
    assert printed["nll_is_20"] == saved["nll_is_20"] and 0 < saved["nll_is_20"] <= saved["neg_elbo"] + 1.0
    assert main(["evaluate", str(out)]) == 0  # a later plain evaluation keeps the estimate
    assert json.loads((out / "metrics.json").read_text())["nll_is_20"] == saved["nll_is_20"]

    ae = tmp_path / "ae"
    assert main(["train", "--model", "ae", "--epochs", "1", "--hidden", "16", "--no-progress", "--out", str(ae)]) == 0
    capsys.readouterr()
    before = (ae / "metrics.json").read_bytes()
    assert main(["evaluate", str(ae), "--nll-samples", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a model with a variational bound" in err[0]
    assert (ae / "metrics.json").read_bytes() == before
    assert main(["train", "--model", "ae", "--objective", "iwae", "--out", str(tmp_path / "no")]) == 2
    assert "--objective is an option of vae" in capsys.readouterr().err and not (tmp_path / "no").exists()
