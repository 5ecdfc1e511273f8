"""What aekit 0.1.0 wrote still reads the same (tests/fixtures/artifacts-0.1.0/README.md says what each file is): its
run folders load and decode their compressed files of every version to what they decoded to then, bit for bit; its
store opens to the same examples; its pickled estimators transform as they did."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aekit
from aekit.cli import main

OLD = Path(__file__).parent / "fixtures" / "artifacts-0.1.0"
# They were written with one torch thread: float kernels round otherwise with another count.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
FILES = {"v1": "run-ae", "v2": "run-vqvae", "v3": "run-rd", "v4": "run-map"}


@pytest.mark.parametrize("version", sorted(FILES))
def test_a_compressed_file_of_each_version_decodes_as_it_did(version, tmp_path):
    out = tmp_path / "decoded.npy"
    assert main(["decompress", str(OLD / FILES[version]), str(OLD / f"{version}.aekc"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(OLD / f"{version}-decoded.npy"))


def test_a_compressed_file_with_names_decodes_to_the_same_named_images(tmp_path):
    out = tmp_path / "back"
    assert main(["decompress", str(OLD / "run-map"), str(OLD / "v5.aekc"), "--out", str(out)]) == 0
    then = sorted(p.relative_to(OLD / "v5-decoded") for p in (OLD / "v5-decoded").rglob("*.png"))
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == then
    for name in then:
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / name)), np.asarray(Image.open(OLD / "v5-decoded" / name))
        )


def test_old_runs_compress_to_the_same_bytes(tmp_path):
    for version in ("v1", "v3"):
        extra = ["--bits", "5"] if version == "v1" else []
        out = tmp_path / f"{version}.aekc"
        assert main(["compress", str(OLD / FILES[version]), str(OLD / "input.npy"), "--out", str(out), *extra]) == 0
        assert out.read_bytes() == (OLD / f"{version}.aekc").read_bytes(), version


def test_an_old_run_evaluates_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD / "run-rd", run)
    assert main(["evaluate", str(run)]) == 0
    assert main(["train", "--resume", "--epochs", "3", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 3


def test_an_old_store_opens_to_the_same_examples(tmp_path):
    store = tmp_path / "digits.store"
    shutil.copytree(OLD / "digits.store", store)
    data, then = aekit.load_dataset(str(store)), np.load(OLD / "digits-store-contents.npz")
    for split in ("x_train", "x_test", "y_train", "y_test"):
        np.testing.assert_array_equal(np.asarray(getattr(data, split)), then[split], err_msg=split)


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_an_old_pickled_estimator_transforms_as_it_did(name):
    estimator = pickle.loads((OLD / f"estimator-{name}.pkl").read_bytes())
    codes = estimator.transform(np.load(OLD / "estimator-input.npy"))
    np.testing.assert_allclose(codes, np.load(OLD / f"estimator-{name}-transform.npy"), rtol=1e-6, atol=1e-7)
