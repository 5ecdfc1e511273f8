"""One scale for a file everywhere: uint8 arrays are intensities in training, the apps and the Python API alike;
image-shaped arrays stay images; real-valued tables are standardized inside the model by default, reported in
their own units; the Python API checks what it is given; small datasets get enough steps an epoch."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

import aekit
from aekit.cli import main
from aekit.data import load_dataset
from aekit.errors import DataError
from aekit.evaluation.measures import reconstruction_metrics
from aekit.models import build_model, model_config
from aekit.models.standardize import Standardize
from aekit.training import run_folder
from aekit.training.trainer import TrainSettings, train

TINY = ["--hidden", "32", "--epochs", "30", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def wild_csv(tmp_path_factory):
    """A table of rank 3 plus 1% noise whose nine columns span eight orders of magnitude (1e-3 to 1e5)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 3))
    columns = [z @ rng.normal(size=3) * 10.0**k + rng.normal(size=600) * 0.01 * 10.0**k for k in range(-3, 6)]
    path = tmp_path_factory.mktemp("wild") / "wild.csv"
    np.savetxt(path, np.stack(columns, 1), delimiter=",", header=",".join(f"c{i}" for i in range(9)), comments="")
    return path


def _metrics(capsys, *args):
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_table_of_wild_scales_trains_from_the_command_line_beside_pca(capsys, tmp_path, wild_csv):
    common = ["--dataset", wild_csv, "--code-dim", "3", *TINY]
    pca_common = [flag for flag in common if flag not in ("--hidden", "32")]  # PCA has no networks
    pca = _metrics(capsys, "train", "--model", "pca", "--out", tmp_path / "pca", *pca_common)
    ae = _metrics(capsys, "train", "--model", "ae", "--out", tmp_path / "ae", *common)
    raw = _metrics(capsys, "train", "--model", "ae", "--out", tmp_path / "raw", "--no-standardize", *common)
    vae = _metrics(capsys, "train", "--model", "vae", "--out", tmp_path / "vae", *common)
    # The squared error in the data's units is the 1e5 column's; r2 weighs every column alike.
    assert pca["r2"] > 0.999 and ae["r2"] > 0.95 and vae["r2"] > 0.5
    assert raw["r2"] < 0  # unstandardized, the small columns are not reconstructed at all
    r2_by_hand = r2_score(
        load_dataset(str(wild_csv)).x_test, aekit.load(tmp_path / "ae").reconstruct(load_dataset(str(wild_csv)).x_test)
    )
    assert ae["r2"] == pytest.approx(r2_by_hand, abs=1e-5)
    config = json.loads((tmp_path / "ae" / run_folder.CONFIG).read_text())
    assert config["options"]["standardize"] is True and config["model"]["standardize"] is True
    weights = load_file(tmp_path / "ae" / run_folder.WEIGHTS)
    x_train = load_dataset(str(wild_csv)).x_train
    scaler = StandardScaler().fit(x_train.astype(np.float64))
    np.testing.assert_allclose(weights["standardize.center"], scaler.mean_, rtol=1e-5)
    np.testing.assert_allclose(weights["standardize.scale"], scaler.scale_, rtol=1e-5)


def test_without_standardization_the_nan_is_explained(capsys, tmp_path, wild_csv):
    code = main(
        [
            "train",
            "--model",
            "vae",
            "--dataset",
            str(wild_csv),
            "--code-dim",
            "3",
            "--no-standardize",
            "--out",
            str(tmp_path / "raw"),
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "NaN" in err and "does not standardize" in err and "--no-standardize" in err


def test_metrics_are_in_the_data_units_and_the_loaded_model_takes_and_gives_them(capsys, tmp_path, wild_csv):
    _metrics(
        capsys, "train", "--model", "ae", "--out", tmp_path / "ae", "--dataset", wild_csv, "--code-dim", "3", *TINY
    )
    model, data = aekit.load(tmp_path / "ae"), load_dataset(str(wild_csv))
    raw = data.x_test
    by_hand = ((model.reconstruct(raw).astype(np.float64) - raw) ** 2).sum(1).mean()
    assert reconstruction_metrics(model, raw)["sse_per_example"] == pytest.approx(by_hand, rel=1e-4)
    standardized = (raw - model.standardize.center.numpy()) / model.standardize.scale.numpy()
    assert np.abs(standardized).max() < 50 < np.abs(raw).max()  # the model's inside is the standardized table
    np.testing.assert_allclose(
        model.encode(raw), model.encoder(torch.from_numpy(standardized)).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_a_run_made_before_standardization_existed_loads_and_resumes(capsys, tmp_path, wild_csv):
    out = tmp_path / "old"
    _metrics(
        capsys,
        "train",
        "--model",
        "ae",
        "--out",
        out,
        "--dataset",
        wild_csv,
        "--code-dim",
        "3",
        "--no-standardize",
        *TINY[:-5],
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    )
    config = json.loads((out / run_folder.CONFIG).read_text())
    del config["options"]["standardize"], config["model"]["standardize"]  # as the previous version wrote it
    (out / run_folder.CONFIG).write_text(json.dumps(config))
    assert not aekit.load(out).standardize.enabled
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0, (
        capsys.readouterr().err
    )


def test_standardize_matches_scikit_learns_scaler_and_undoes_itself():
    x = np.random.default_rng(0).normal([1e-3, 5.0, 1e5, 7.0], [1e-4, 2.0, 3e4, 0.0], size=(500, 4))
    standardize = Standardize((4,)).fit(x.astype(np.float32))
    scaler = StandardScaler().fit(x)
    np.testing.assert_allclose(standardize.center.numpy(), scaler.mean_, rtol=1e-5)
    np.testing.assert_allclose(standardize.scale.numpy(), scaler.scale_, rtol=1e-5)  # a constant column keeps 1
    t = torch.from_numpy(x.astype(np.float32))
    np.testing.assert_allclose(standardize.inverse(standardize(t)).numpy(), x, rtol=1e-4)


@pytest.fixture(scope="module")
def uint8_images(tmp_path_factory):
    """200 8-bit images of 10x10 pixels in (n, height, width), as a user saves them with numpy."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 10)
    images = (ramp[None, :, None] * rng.random((200, 1, 1)) + rng.integers(0, 20, (200, 10, 10))).clip(0, 255)
    path = tmp_path_factory.mktemp("u8") / "pixels.npy"
    np.save(path, images.astype(np.uint8))
    return path


def test_a_uint8_array_trains_as_images_and_the_apps_give_back_its_units_and_layout(capsys, tmp_path, uint8_images):
    out = tmp_path / "run"
    metrics = _metrics(
        capsys,
        "train",
        "--model",
        "dae",
        "--net",
        "conv",
        "--hidden",
        "8,16",
        "--dataset",
        uint8_images,
        "--code-dim",
        "4",
        "--epochs",
        "2",
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
    )
    config = json.loads((out / run_folder.CONFIG).read_text())
    assert config["model"]["shape"] == [1, 10, 10] and config["model"]["likelihood"] == "bernoulli"
    assert "bce_per_example" in metrics and metrics["sse_per_example"] < 100  # intensities, not 0..255 values
    # 160 training images at the default batch of 128 would be 2 steps an epoch: the batch was fitted to the data.
    assert metrics["batch_size"] == 16
    assert main(["denoise", str(out), str(uint8_images), "--out", str(tmp_path / "clean.npy")]) == 0
    clean, pixels = np.load(tmp_path / "clean.npy"), np.load(uint8_images)
    assert clean.dtype == np.uint8 and clean.shape == pixels.shape
    model = aekit.load(out)
    np.testing.assert_array_equal(clean, model.reconstruct(pixels))  # the Python API: the same scale and layout
    expected = np.round(np.clip(model.reconstruct(pixels.astype(np.float32)[:, None] / 255), 0, 1) * 255)
    assert np.abs(clean.astype(int) - expected[:, 0]).max() <= 1


def test_a_run_of_intensities_refuses_values_outside_the_unit_interval(capsys, tmp_path, uint8_images):
    out = tmp_path / "run"
    _metrics(
        capsys,
        "train",
        "--model",
        "ae",
        "--hidden",
        "16",
        "--dataset",
        uint8_images,
        "--code-dim",
        "2",
        "--epochs",
        "1",
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
    )
    np.save(tmp_path / "raw.npy", np.load(uint8_images).astype(np.float32))  # 0..255 saved as floats
    assert main(["denoise", str(out), str(tmp_path / "raw.npy"), "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[0, 1] intensities" in err
    assert not (tmp_path / "o.npy").exists()


def test_the_python_api_checks_type_shape_and_finiteness_in_one_line_and_keeps_the_callers_layout(digits):
    model = build_model(model_config("ae", digits.shape, code_dim=3, hidden=(16,)))
    x = digits.x_test[:5]
    flat = model.reconstruct(x.reshape(5, 64))
    assert flat.shape == (5, 64)  # flat in, flat out
    np.testing.assert_allclose(flat, model.reconstruct(x).reshape(5, 64), rtol=1e-6)
    assert model.reconstruct(x[:, 0]).shape == (5, 8, 8)
    assert model.decode(model.encode(x)).shape == (5, 1, 8, 8)
    pixels = np.round(x * 255).astype(np.uint8)
    np.testing.assert_allclose(model.encode(pixels), model.encode(pixels / np.float32(255)), rtol=1e-6)
    for bad, message in (
        (np.zeros((2, 7)), "size 7 values but the model takes 8x8"),
        (x[0, 0], "add a first dimension for the batch"),
        (np.full((2, 64), np.nan), "NaN or infinite"),
        (np.array([["a"] * 64]), "not numbers"),
    ):
        with pytest.raises(DataError, match=message) as caught:
            model.encode(bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"takes \(n, 3\)"):
        model.decode(np.zeros((2, 4), np.float32))


def test_the_trainer_fits_the_standardization_it_trains_with(digits):
    spec = model_config("ae", (4,), code_dim=2, hidden=(8,), likelihood="gaussian", standardize=True)
    x = np.random.default_rng(0).normal([0, 1e3, -5, 1e6], [1, 1e2, 1e-3, 1e5], (300, 4)).astype(np.float32)
    data = aekit.Dataset("table", x[:240], x[240:], None, None, binary=False)
    model = build_model(spec)
    train(model, data, TrainSettings(epochs=2, batch_size=32), progress=False, device="cpu")
    np.testing.assert_allclose(model.standardize.center.numpy(), x[:240].mean(0, dtype=np.float64), rtol=1e-4)
