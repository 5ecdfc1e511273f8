"""A model family is one file: a family registered here, inside the test, trains, saves, loads, compares and fits as
a scikit-learn estimator with no edit anywhere else."""

import csv
import json
from dataclasses import dataclass

import joblib
import numpy as np
import pytest
import torch

import aekit
from aekit.cli import main
from aekit.models import FAMILIES, AutoEncoder, Loss, NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
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
