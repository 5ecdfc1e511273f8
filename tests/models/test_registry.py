"""A model family is one file: a family registered here, inside the test, trains, saves, loads, compares and fits as
a scikit-learn estimator with no edit anywhere else."""

import csv
import json
import math
from dataclasses import dataclass

import joblib
import numpy as np
import pytest
import torch

import aekit
from aekit.cli import main
from aekit.errors import AekitError
from aekit.evaluation import evaluate
from aekit.evaluation.anomaly import SAMPLES, SCORES, anomaly_scores, score_names
from aekit.evaluation.measures import importance_weighted_nll, negative_elbo
from aekit.models import (
    FAMILIES,
    AutoEncoder,
    Bernoulli,
    Loss,
    NetConfig,
    build_model,
    gaussian_kl,
    model_config,
    option,
    register,
)
from aekit.models.likelihood import LIKELIHOODS
from aekit.report.figures import write_figures
from aekit.sklearn import estimator, outlier_detector

NAME = "shrunk-ae"
FAST = ["--code-dim", "4", "--hidden", "32", "--epochs", "2", "--no-progress"]


@pytest.fixture
def family():
    """A small family of its own: an auto-encoder whose loss also shrinks the code, with one option (its weight)."""

    class ShrunkAE(AutoEncoder):
        """Shrunk auto-encoder: loss = -log p(x | decoder(encoder(x))) + shrink * ||encoder(x)||^2."""

        def __init__(self, encoder, decoder, likelihood, shrink: float, **settings):
            super().__init__(encoder, decoder, likelihood, **settings)
            self.shrink = shrink

        def loss(self, x: torch.Tensor) -> Loss:
            x = self.training_input(x)
            z = self.encoder(x)
            rec = self.likelihood.nll(self.decoder(z), x).mean()
            size = z.pow(2).sum(-1).mean()
            return Loss(rec + self.shrink * size, {"reconstruction": rec, "code_size": size})

    @dataclass(frozen=True)
    class ShrunkAEConfig(NetConfig):
        """The shrunk auto-encoder: the weight of its code's squared norm."""

        family = NAME
        label = "Shrunk-AE"
        model_class = ShrunkAE

        shrink: float = option(0.01, "weight of the code's squared norm in the loss")

        def problems(self) -> list[str]:
            return super().problems() + ([] if self.shrink >= 0 else [f"shrink {self.shrink} must be >= 0"])

        def build(self) -> ShrunkAE:
            networks = self.networks()
            return ShrunkAE(*networks, LIKELIHOODS[self.likelihood], self.shrink, **self.model_settings())

    register(ShrunkAEConfig)
    yield ShrunkAE
    FAMILIES.pop(NAME)


def test_a_family_registered_in_a_test_goes_through_every_front_door(family, tmp_path, digits, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", NAME, "--shrink", "0.5", "--out", str(run), *FAST]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["shrink"] == 0.5
    model = aekit.load(run)
    assert isinstance(model, family) and model.shrink == 0.5 and model.config.family == NAME
    assert model.reconstruct(digits.x_test[:5]).shape == (5, 1, 8, 8)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["sse_per_example"] > 0
    assert main(["train", "--model", "ae", "--shrink", "0.5", "--out", str(tmp_path / "no"), *FAST]) == 2
    assert f"--shrink is an option of {NAME}, not of ae" in capsys.readouterr().err

    out = tmp_path / "compare"
    assert main(["compare", "--models", f"ae,{NAME}", "--out", str(out), *FAST]) == 0
    with open(out / "comparison.csv", newline="") as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["AE", "Shrunk-AE"]
    assert "| Shrunk-AE |" in (out / "comparison.md").read_text()

    x = digits.x_train.reshape(len(digits.x_train), -1)[:300].astype(np.float64)
    fitted = estimator(NAME)(n_components=3, shrink=0.1, hidden_layer_sizes=(32,), max_iter=2, random_state=0)
    codes = fitted.fit_transform(x)
    assert codes.shape == (300, 3) and fitted.model_.shrink == 0.1 and fitted.get_params()["shrink"] == 0.1


def _codes(model, x):
    return model.fit(x).transform(x)


@pytest.mark.slow
def test_a_family_registered_in_a_test_goes_to_joblibs_worker_processes(family, digits):
    """joblib sends the family's config class by value to processes where it was never registered."""
    x = digits.x_train.reshape(len(digits.x_train), -1)[:200].astype(np.float64)
    settings = {"n_components": 3, "shrink": 0.1, "hidden_layer_sizes": (16,), "max_iter": 2, "random_state": 0}
    models = [estimator(NAME)(**settings), outlier_detector(NAME)(**settings)]
    codes = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_codes)(model, x) for model in models)
    for model, there in zip(models, codes):
        np.testing.assert_allclose(there, _codes(model, x), rtol=1e-5, atol=1e-6)


# --- what a family can do is asked of it, not of its class ----------------------------------------------------------

BOUNDED = "bounded-ae"


class FixedVarianceVAE(AutoEncoder):
    """q(z|x) = N(encoder(x), diag(exp(logvar))), one learned log-variance per code value, p(z) = N(0, I); loss = the
    negative ELBO. No subclass of aekit's VAE: it declares that it has a variational bound, and has what one needs."""

    variational = True

    def __init__(self, encoder, decoder, likelihood, **settings):
        super().__init__(encoder, decoder, likelihood, **settings)
        self.logvar = torch.nn.Parameter(torch.full((self.code_dim,), -1.0))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.encoder(x)
        return mu, self.logvar.expand_as(mu)

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.posterior(x)
        z = mu + torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) * (0.5 * logvar).exp()
        return self.likelihood.nll(self.decoder(z), x), gaussian_kl(mu, logvar)

    def loss(self, x: torch.Tensor) -> Loss:
        rec, kl = (term.mean() for term in self.elbo_terms(self.training_input(x)))
        return Loss(rec + kl, {"reconstruction": rec, "kl": kl})


@pytest.fixture
def bounded():
    """A family of its own with a variational bound, registered for the test."""

    @dataclass(frozen=True)
    class BoundedConfig(NetConfig):
        """The fixed-variance VAE: only the shared fields."""

        family = BOUNDED
        label = "Bounded-AE"
        model_class = FixedVarianceVAE

        def build(self) -> FixedVarianceVAE:
            return FixedVarianceVAE(*self.networks(), LIKELIHOODS[self.likelihood], **self.model_settings())

    register(BoundedConfig)
    yield BoundedConfig
    FAMILIES.pop(BOUNDED)


def test_a_family_with_a_variational_bound_gets_its_metrics_scores_and_estimator_options(bounded, digits):
    torch.manual_seed(0)
    model = build_model(model_config(BOUNDED, digits.shape, code_dim=3, hidden=(16,)))
    metrics = evaluate(model, digits, nll_samples=4, normal_classes=(0, 1))
    x = digits.x_test
    assert metrics["neg_elbo"] == pytest.approx(negative_elbo(model, x))
    assert metrics["nll_is_4"] == pytest.approx(importance_weighted_nll(model, x, 4).nll.mean())
    assert {"auroc_neg_elbo", "auroc_nll_is_4", "auroc_reconstruction_nll"} <= set(metrics)
    assert score_names(model) == SCORES
    estimate = importance_weighted_nll(model, x[:20], 6, same_draws=True)
    np.testing.assert_allclose(anomaly_scores(model, x[:20], "nll_is", samples=6), estimate.nll)
    assert bounded.model_class.variational and outlier_detector(BOUNDED)().get_params()["nll_samples"] == SAMPLES


def test_a_family_without_one_is_refused_the_likelihood_estimate_and_its_scores(digits):
    model = build_model(model_config("ae", digits.shape, code_dim=3, hidden=(16,)))
    assert not model.variational and score_names(model) == ("reconstruction_nll",)
    with pytest.raises(AekitError, match="needs a model with a variational bound"):
        evaluate(model, digits, nll_samples=4)
    assert "neg_elbo" not in evaluate(model, digits)


class TiedAE(AutoEncoder):
    """x' = W^T code + c, W the encoder's weight: no decoder network, only the map from a code to the likelihood's
    parameters (the logits)."""

    def __init__(self, shape: tuple[int, ...], code_dim: int):
        encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(shape), code_dim))
        super().__init__(encoder, None, Bernoulli, code_dim=code_dim, example_shape=shape)
        self.bias = torch.nn.Parameter(torch.zeros(math.prod(shape)))

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.encoder[1].weight + self.bias).unflatten(1, self.example_shape)


def test_the_reconstruction_nll_is_of_the_output_a_family_maps_its_code_to(digits):
    torch.manual_seed(0)
    model = TiedAE(digits.shape, 3)
    x = digits.x_test[:20]
    mean = model.decode(model.encode(x)).astype(np.float64)  # the likelihood's mean of decoder_output
    cross_entropy = -(x * np.log(mean) + (1 - x) * np.log1p(-mean)).reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(anomaly_scores(model, x), cross_entropy, rtol=1e-4)


class NoisyAE(AutoEncoder):
    """An auto-encoder that learns to undo masking noise of its own (no subclass of aekit's DenoisingAE)."""

    noise, noise_level = "masking", 0.5

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand_like(x) >= self.noise_level)


def test_a_family_that_learns_to_undo_noise_gets_the_denoising_figure(digits, tmp_path):
    model = build_model(model_config("ae", digits.shape, code_dim=3, hidden=(16,)))
    assert model.noise is None and "denoising.png" not in {p.name for p in write_figures(model, digits, tmp_path, "AE")}
    noisy = NoisyAE(model.encoder, model.decoder, model.likelihood, code_dim=3, example_shape=digits.shape)
    assert (tmp_path / "denoising.png") in write_figures(noisy, digits, tmp_path, "Noisy-AE")
