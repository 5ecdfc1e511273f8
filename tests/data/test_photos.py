"""A folder of images of mixed sizes for patch training (aekit.data.photos)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PHOTO_SIZES, photo_folder
from PIL import Image

from aekit.data import load_dataset
from aekit.data.dataset import split_indices, with_normal_training
from aekit.data.photos import TRANSFORMS, centre, crop
from aekit.errors import DataError


def test_photos_of_mixed_sizes_load_whole_with_their_centre_crops_as_examples(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    dataset = load_dataset(str(folder), patch=8, seed=3, test_fraction=0.2)
    train, test = split_indices(len(PHOTO_SIZES), seed=3, test_fraction=0.2)
    sources = [np.asarray(Image.open(folder / f"p{i}.png"))[None] for i in range(len(PHOTO_SIZES))]
    assert dataset.shape == (1, 8, 8) and dataset.x_train.dtype == np.uint8
    assert len(dataset.photos) == len(train) == len(dataset.x_train) and len(dataset.x_test) == len(test)
    for photo, i, example in zip(dataset.photos, train, dataset.x_train):
        np.testing.assert_array_equal(photo, sources[i])  # whole, at its own size
        height, width = photo.shape[1:]
        top, left = (height - 8) // 2, (width - 8) // 2
        np.testing.assert_array_equal(example, photo[:, top : top + 8, left : left + 8])
    for i, example in zip(test, dataset.x_test):
        np.testing.assert_array_equal(example, centre(sources[i], 8))
    # The same data loads to the same digest; another split to another.
    assert load_dataset(str(folder), patch=8, seed=3, test_fraction=0.2).digest == dataset.digest
    assert load_dataset(str(folder), patch=8, seed=4, test_fraction=0.2).digest != dataset.digest


def test_a_folder_mixing_grey_and_colour_photos_loads_in_colour(tmp_path):
    folder = photo_folder(tmp_path / "photos", colour={1})
    dataset = load_dataset(str(folder), patch=8, seed=0, test_fraction=0.2)
    assert dataset.shape == (3, 8, 8) and all(photo.shape[0] == 3 for photo in dataset.photos)
    grey = next(photo for photo in dataset.photos if photo.shape[1:] != (29, 33))
    np.testing.assert_array_equal(grey[0], grey[2])  # a grey photo's intensity in every channel


def test_normal_class_training_keeps_the_photos_of_its_classes(tmp_path):
    for name in ("cats", "dogs"):
        photo_folder(tmp_path / "photos" / name)
    dataset = load_dataset(str(tmp_path / "photos"), patch=8, seed=0, test_fraction=0.5)
    kept = with_normal_training(dataset, (dataset.y_train[0],))
    assert len(kept.photos) == len(kept.x_train) < len(dataset.photos)
    for photo, example in zip(kept.photos, kept.x_train):
        np.testing.assert_array_equal(centre(photo, 8), example)


def test_each_transform_is_a_flip_and_quarter_turns_of_the_crop():
    photo = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    window = photo[:, 1:4, 2:5]
    seen = []
    for transform in range(TRANSFORMS):
        patch = crop(photo, 1, 2, 3, transform)
        flipped = window[:, :, ::-1] if transform >= 4 else window
        np.testing.assert_array_equal(patch, np.rot90(flipped, transform % 4, axes=(1, 2)))
        seen.append(patch.tobytes())
    assert len(set(seen)) == TRANSFORMS  # eight different patches


def test_a_photo_smaller_than_the_patch_is_refused_naming_it(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    with pytest.raises(DataError, match=r"p0\.png is 20x17 pixels, smaller than the patches of --patch 18"):
        load_dataset(str(folder), patch=18)
    assert load_dataset(str(folder), patch=17).shape == (1, 17, 17)  # as large as the smallest side


def test_patch_needs_a_folder_of_images(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 64), np.float32))
    for source in ("digits", str(tmp_path / "x.npy")):
        with pytest.raises(DataError, match="--patch 8 crops the photos of a folder of images"):
            load_dataset(source, patch=8)
