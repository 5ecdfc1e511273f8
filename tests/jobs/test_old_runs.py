"""A run folder written before the model registry (every family's fields in one flat config) still loads, evaluates
to the metrics it was saved with, and resumes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import aekit
from aekit.cli import main
from aekit.models import VAE
from aekit.models.vae import VAEConfig

OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_before_registry"


def test_a_run_from_before_the_registry_loads_with_its_family_fields_only():
    saved = json.loads((OLD_RUN / "config.json").read_text())["model"]
    assert {"noise", "prior", "dropout"} <= set(saved), "the kept folder is of the old, flat kind"
    model = aekit.load(OLD_RUN)
    assert isinstance(model, VAE) and isinstance(model.config, VAEConfig)
    assert model.config.to_dict() == {
        k: v
        for k, v in saved.items()
        if k not in ("noise", "noise_level", "dropout", "input_dropout", "prior", "discriminator_hidden")
    }
    digits = aekit.load_dataset("digits")
    assert model.reconstruct(digits.x_test[:3]).shape == (3, 1, 8, 8)


def test_a_run_from_before_the_registry_evaluates_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    saved = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for name in ("sse_per_example", "bce_per_example", "neg_elbo", "knn_accuracy"):
        assert metrics[name] == pytest.approx(saved[name], rel=1e-5), name
    assert main(["train", "--resume", "--epochs", "3", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["neg_elbo"])


def test_a_run_from_before_data_identities_is_not_pointed_at_other_data(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    assert "data" not in json.loads((run / "config.json").read_text())  # it records no identity of its data
    np.save(tmp_path / "x.npy", np.zeros((20, 64), np.float32))
    assert main(["evaluate", str(run), "--dataset", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "does not record which data the run was trained on" in err and len(err.strip().splitlines()) == 1, err
    assert json.loads((run / "config.json").read_text())["options"]["dataset"] == "digits"
