"""A store of images of mixed sizes (format version 3, aekit.data.store): each image packed at its own size, read
back exactly, opened for patch training as the folder it was packed from, refused where one shape is needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_refused, photo_folder, run_cli
from PIL import Image

from aekit.data import load_dataset
from aekit.data.dataset import as_float32
from aekit.data.images import decoded
from aekit.data.store import format as fmt
from aekit.errors import DataError

# (width, height) of the photos: the two sizes of the brief.
SIZES = ((20, 30), (25, 17))


def _pack(capsys, folder, store, *extra):
    argv = ("pack", str(folder), "--out", str(store), "--no-progress", "--workers", "1", *extra)
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    return json.loads(out), err


@pytest.fixture
def odd(tmp_path):
    """Six images of two sizes in two classes, read as training reads them: grey, RGB, 16-bit, a palette with
    transparency, RGBA and a JPEG turned upright by its EXIF orientation."""
    folder, rng = tmp_path / "odd", np.random.default_rng(0)
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    (width, height), (wide, low) = SIZES
    Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(folder / "a" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (low, wide, 3), dtype=np.uint8)).save(folder / "a" / "rgb.png")
    deep = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "b" / "deep.png")
    palette = Image.fromarray(rng.integers(0, 4, (low, wide), dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(folder / "b" / "palette.png", transparency=0)
    Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8)).save(folder / "a" / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 17 wide and 25 high, shown turned: 25 wide, 17 high
    Image.fromarray(rng.integers(0, 256, (wide, low, 3), dtype=np.uint8)).save(folder / "b" / "turned.jpg", exif=exif)
    return folder


def test_a_folder_of_mixed_sizes_packs_each_image_at_its_own_size_and_reads_back_exactly(capsys, tmp_path, odd):
    store = tmp_path / "odd.store"
    summary, err = _pack(capsys, odd, store)
    manifest = json.loads((store / fmt.MANIFEST).read_text())
    assert manifest["version"] == fmt.RAGGED and summary["shape"] == [3] and summary["dtype"] == "float32"
    assert "mixed sizes" in err
    assert sorted(p.name for p in store.iterdir()) == sorted([*fmt.DATA_FILES, fmt.LISTING, fmt.MANIFEST])
    names = sorted(p.relative_to(odd).as_posix() for p in odd.rglob("*.*"))
    split = np.load(store / fmt.SPLIT)
    sources = np.concatenate([split["train"], split["test"]])
    sizes, flat = np.load(store / fmt.SIZES), np.load(store / fmt.EXAMPLES)
    starts = fmt.example_offsets(sizes, 3)
    expected = [as_float32(decoded(odd / names[i], 3)) for i in sources]  # as training reads each
    for row, pixels in enumerate(expected):
        assert tuple(sizes[row]) == pixels.shape[1:] and pixels.shape[1:] in ((30, 20), (17, 25))
        np.testing.assert_array_equal(flat[starts[row] : starts[row + 1]].reshape(pixels.shape), pixels)
    train = np.concatenate([p.reshape(3, -1) for p in expected[: len(split["train"])]], axis=1).astype(np.float64)
    statistics = np.load(store / fmt.STATISTICS)  # per channel, over every training pixel
    np.testing.assert_allclose(statistics["mean"], train.mean(1), rtol=1e-12)
    np.testing.assert_allclose(statistics["std"], train.std(1), rtol=1e-9)
    assert manifest["bounds"] == [train.min(), train.max()]
    assert run_cli(capsys, "pack", "--verify", str(store))[0] == 0
    again = tmp_path / "again.store"
    _pack(capsys, odd, again)
    for name in manifest["files"]:
        assert (again / name).read_bytes() == (store / name).read_bytes(), name


def test_a_ragged_store_opens_for_patch_training_as_the_folder_it_was_packed_from(capsys, tmp_path, odd):
    _pack(capsys, odd, tmp_path / "odd.store", "--seed", "3")
    store = load_dataset(str(tmp_path / "odd.store"), patch=12, seed=3)
    folder = load_dataset(str(odd), patch=12, seed=3)
    assert len(store.photos) == len(folder.photos) == 5 and store.store_id is not None
    for mine, theirs in zip(store.photos, folder.photos):
        np.testing.assert_array_equal(mine, theirs)
    for split in ("x_train", "x_test", "y_train", "y_test"):
        np.testing.assert_array_equal(getattr(store, split), getattr(folder, split), err_msg=split)
    assert store.label_names == folder.label_names == ("a", "b") and store.value_range == folder.value_range


def test_a_ragged_store_is_refused_where_one_shape_is_needed_or_a_photo_is_smaller_than_the_patch(capsys, tmp_path):
    folder = photo_folder(tmp_path / "photos", sizes=SIZES * 3)
    store, run = tmp_path / "photos.store", tmp_path / "run"
    _pack(capsys, folder, store)
    with pytest.raises(DataError, match="holds images of mixed sizes.* train on it with --patch P, or resize"):
        load_dataset(str(store))
    for command in (("train", "--dataset", str(store)), ("train", "--model", "red", "--dataset", str(store))):
        assert_refused(capsys, tmp_path, *command, "--out", str(run), match="--patch P")
    argv = ("train", "--dataset", str(store), "--patch", "18", "--out", str(run))
    assert_refused(capsys, tmp_path, *argv, match="p1.png is 25x17 pixels, smaller than the patches of --patch 18")
    assert not run.exists()
    np.save(tmp_path / "table.npy", np.arange(50, dtype=np.float32).reshape(10, 5))
    _pack(capsys, tmp_path / "table.npy", tmp_path / "table.store")
    with pytest.raises(DataError, match=r"holds examples of shape \(5,\), not images"):
        load_dataset(str(tmp_path / "table.store"), patch=4)


def test_a_truncated_image_is_refused_or_skipped_as_in_any_folder(capsys, tmp_path):
    folder = photo_folder(tmp_path / "photos", sizes=SIZES * 3)
    data = (folder / "p2.png").read_bytes()
    (folder / "p2.png").write_bytes(data[: len(data) // 2])
    store = tmp_path / "photos.store"
    argv = ("pack", str(folder), "--out", str(store), "--no-progress", "--workers", "1")
    assert_refused(capsys, tmp_path, *argv, match="p2.png cannot be read as an image")
    summary, err = _pack(capsys, folder, store, "--skip-bad")
    assert summary["skipped"] == ["p2.png"] and summary["n"] == 5 and "skipped p2.png" in err
    photos = load_dataset(str(store), patch=8).photos
    assert sorted(photo.shape[1:] for photo in photos) == [(17, 25), (17, 25), (30, 20), (30, 20)]


def test_an_edited_sizes_file_is_refused(capsys, tmp_path):
    store = tmp_path / "photos.store"
    _pack(capsys, photo_folder(tmp_path / "photos", sizes=SIZES * 3), store)
    sizes = np.load(store / fmt.SIZES)
    np.save(store / fmt.SIZES, sizes[:, ::-1].copy())  # the same values, each size turned
    with pytest.raises(DataError, match="sizes.npy does not match its sha256"):
        load_dataset(str(store), patch=8)


def test_images_of_one_size_still_pack_as_version_2_and_train_on_patches_too(capsys, tmp_path):
    folder = photo_folder(tmp_path / "photos", sizes=SIZES[:1] * 5)
    _pack(capsys, folder, tmp_path / "photos.store")
    assert json.loads((tmp_path / "photos.store" / fmt.MANIFEST).read_text())["version"] == 2
    store, source = load_dataset(str(tmp_path / "photos.store"), patch=8), load_dataset(str(folder), patch=8)
    assert store.x_train.shape == (4, 1, 8, 8) and load_dataset(str(tmp_path / "photos.store")).shape == (1, 30, 20)
    for mine, theirs in zip(store.photos, source.photos):
        np.testing.assert_array_equal(mine, theirs)
