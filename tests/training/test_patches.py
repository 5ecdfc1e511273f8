"""Patch training (--patch, --patches-per-epoch): random crops of photos of mixed sizes, seeded and resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_refused, photo_folder, run_cli
from numpy.lib.stride_tricks import sliding_window_view
from test_faults import _SignalAt

from aekit.data import load_dataset
from aekit.errors import TrainingStopped
from aekit.models import build_model, model_config
from aekit.training import run_folder
from aekit.training.batches import PatchSource, make_source
from aekit.training.trainer import TrainSettings, train

P = 8


@pytest.fixture
def photos(tmp_path):
    return load_dataset(str(photo_folder(tmp_path / "photos", colour={2})), patch=P, seed=0, test_fraction=0.2)


def _patches(dataset, seed, n=64, batch_size=16) -> tuple[torch.Tensor, torch.Tensor]:
    """An epoch's crops drawn with ``seed``, and the batches they make, stacked."""
    source = make_source(dataset, "auto", torch.device("cpu"), batch_size, 0, 1, True, patches_per_epoch=n)
    assert isinstance(source, PatchSource) and source.steps_per_epoch == -(-n // batch_size)
    order = source.order(torch.Generator().manual_seed(seed))
    return order, torch.cat(list(source.batches(order, 0)))


def _found_in(patch: np.ndarray, photos) -> bool:
    """Whether ``patch`` is a P x P window of some photo flipped left to right or not, turned by quarter turns."""
    for photo in photos:
        for flipped in (photo, photo[:, :, ::-1]):
            for turns in range(4):
                turned = np.rot90(flipped, turns, axes=(1, 2))
                windows = sliding_window_view(turned, (P, P), axis=(1, 2))  # (C, rows, cols, P, P)
                if (windows == patch[:, None, None]).all(axis=(0, 3, 4)).any():
                    return True
    return False


def test_patches_are_p_by_p_crops_of_the_photos_flipped_and_turned(photos):
    order, patches = _patches(photos, seed=0)
    assert patches.shape == (64, 3, P, P) and patches.dtype == torch.uint8
    assert all(_found_in(patch.numpy(), photos.photos) for patch in patches)
    assert set(order[:, 3].tolist()) == set(range(8))  # every flip and turn drawn
    assert set(order[:, 0].tolist()) == set(range(len(photos.photos)))  # from every photo


def test_the_same_seed_gives_the_same_patches_and_another_seed_others(photos):
    order, patches = _patches(photos, seed=5)
    again_order, again = _patches(photos, seed=5)
    assert torch.equal(order, again_order) and torch.equal(patches, again)
    assert not torch.equal(_patches(photos, seed=6)[1], patches)


def _model(dataset):
    torch.manual_seed(0)
    return build_model(model_config("dae", dataset.shape, net="conv", code_dim=4))


def test_a_patch_run_stopped_mid_epoch_resumes_to_the_same_weights_bit_for_bit(photos, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=16, seed=1, patches_per_epoch=80)  # 5 steps an epoch
    straight = _model(photos)
    history = train(straight, photos, settings, device="cpu", progress=False)
    assert len(history) == 2 and "test_loss" in history[-1]
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(TrainingStopped, match="SIGTERM after step 2 of epoch 2"):
        train(_SignalAt(_model(photos), poison_at=5 + 2), photos, settings, out=out, device="cpu", progress=False)
    assert run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["position"]["order"].shape == (80, 4)
    torch.manual_seed(99)
    resumed = build_model(model_config("dae", photos.shape, net="conv", code_dim=4))
    train(_SignalAt(resumed, poison_at=-1), photos, settings, out=out, device="cpu", progress=False, resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_the_default_batch_is_fitted_to_the_patches_of_an_epoch_not_the_photos(photos):
    from aekit.jobs.workflow import fit_batch
    from aekit.training.settings import defaults

    # 640 patches an epoch at the default batch of 128 are 5 steps: made 10 of 64, not 10 of the 5 photos' 0.
    assert fit_batch({**defaults(), "patch": P, "patches_per_epoch": 640}, {}, photos)["batch_size"] == 64


def test_the_cli_trains_on_a_folder_of_mixed_sizes_and_records_the_patch(capsys, tmp_path):
    folder, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    argv = ["train", "--dataset", str(folder), "--patch", str(P), "--patches-per-epoch", "48", "--batch-size", "16"]
    status, _, err = run_cli(capsys, *argv, "--model", "dae", "--net", "conv", "--epochs", "2", "--out", str(out))
    assert status == 0, err
    config = json.loads((out / run_folder.CONFIG).read_text())
    assert config["options"]["patch"] == P and config["options"]["patches_per_epoch"] == 48
    assert config["data"]["shape"] == [1, P, P] and config["data"]["n_train"] == 5
    assert len((out / run_folder.HISTORY).read_text().splitlines()) == 3  # a header and two epochs
    assert "bce_per_example" in json.loads((out / "metrics.json").read_text())  # measured on the test crops
    assert run_cli(capsys, "evaluate", str(out))[0] == 0
    assert_refused(capsys, out, "train", "--resume", "--out", str(out), "--patch", "6", match="patch")


def test_the_cli_refuses_patch_without_a_folder_or_larger_than_a_photo(capsys, tmp_path):
    folder, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    assert_refused(capsys, out, "train", "--patch", "8", "--out", str(out), match="crops the photos of a folder")
    assert_refused(
        capsys, out, "train", "--dataset", str(folder), "--patch", "18", "--out", str(out), match="p0.png is 20x17"
    )
    assert not out.exists()


def _store(capsys, folder, store):
    """``folder`` packed into ``store`` (aekit pack, in this process)."""
    status, _, err = run_cli(capsys, "pack", str(folder), "--out", str(store), "--no-progress", "--workers", "1")
    assert status == 0, err
    return store


def test_a_store_packed_from_the_folder_gives_the_same_patches(capsys, photos, tmp_path):
    store = _store(capsys, tmp_path / "photos", tmp_path / "photos.store")  # the folder the fixture loaded
    packed = load_dataset(str(store), patch=P, seed=0, test_fraction=0.2)
    order, patches = _patches(photos, seed=5)
    again_order, again = _patches(packed, seed=5)
    assert torch.equal(order, again_order) and torch.equal(patches, again)


def test_the_cli_trains_red_on_a_store_of_mixed_sizes_and_resumes(capsys, tmp_path):
    store, out = _store(capsys, photo_folder(tmp_path / "photos"), tmp_path / "photos.store"), tmp_path / "run"
    argv = ["train", "--model", "red", "--width", "4", "--levels", "1", "--dataset", str(store), "--out", str(out)]
    status, _, err = run_cli(capsys, *argv, "--patch", str(P), "--patches-per-epoch", "32", "--epochs", "1")
    assert status == 0, err
    config = json.loads((out / run_folder.CONFIG).read_text())
    assert config["data"]["shape"] == [1, P, P] and config["data"]["store_id"] is not None
    status, _, err = run_cli(capsys, "train", "--resume", "--out", str(out), "--epochs", "2")
    assert status == 0, err
    assert len((out / run_folder.HISTORY).read_text().splitlines()) == 3  # a header and two epochs
    assert run_cli(capsys, "evaluate", str(out))[0] == 0
