"""A small set of colour photo crops for the rate-distortion benchmark (bench/compress.py), from the photos that
scikit-image (``skimage.data``) and scikit-learn (``load_sample_images``) ship: models train on random crops of some
photos and are measured on the tiles of the others. A handful of photos, some of them JPEGs already: a small set,
not a standard benchmark."""

from __future__ import annotations

import dataclasses

import numpy as np

from aekit.data.dataset import Dataset

# Training photos: a portrait, a cup of coffee, a rocket on its pad, a telescope's sky and a stained tissue.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
# Held-out photos: a cat (scikit-image), a temple and a flower (scikit-learn's two JPEGs).
TEST_PHOTOS = ("chelsea", "china.jpg", "flower.jpg")


@dataclasses.dataclass
class Photos:
    """The crops as a Dataset of (n, 3, size, size) images (training crops as 8-bit pixels, test tiles as
    float32 intensities in [0, 1]), and the held-out photos cut to whole tiles ((3, rows * size, columns * size) in
    [0, 1]), whose tiles, row by row and photo after photo, are the test tiles."""

    data: Dataset
    wholes: list[np.ndarray]


def photo(name: str) -> np.ndarray:
    """One shipped photo, (h, w, 3) uint8: a scikit-image data name, or a scikit-learn sample image's file name."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        return next(image for file, image in zip(sample.filenames, sample.images) if file.endswith(name))
    import skimage.data

    return getattr(skimage.data, name)()


def tiles(image: np.ndarray, size: int) -> np.ndarray:
    """The whole ``size`` x ``size`` tiles of a (channels, h, w) image, row by row, as (n, channels, size, size)."""
    channels, rows, columns = image.shape[0], image.shape[1] // size, image.shape[2] // size
    cut = image[:, : rows * size, : columns * size]
    return cut.reshape(channels, rows, size, columns, size).transpose(1, 3, 0, 2, 4).reshape(-1, channels, size, size)


def random_crops(images: list[np.ndarray], size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crops of ``size`` x ``size`` at random places of random photos (each photo equally likely), half of
    them mirrored left to right, as (n, 3, size, size)."""
    crops = []
    for which in rng.integers(len(images), size=n):
        image = images[which]
        top, left = rng.integers(image.shape[0] - size + 1), rng.integers(image.shape[1] - size + 1)
        crop = image[top : top + size, left : left + size]
        crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return np.stack(crops).transpose(0, 3, 1, 2)


def load_photos(size: int, train_crops: int, seed: int) -> Photos:
    """``train_crops`` random crops of the training photos and every whole tile of the held-out ones."""
    rng = np.random.default_rng(seed)
    train = random_crops([photo(name) for name in TRAIN_PHOTOS], size, train_crops, rng)
    wholes = []
    for name in TEST_PHOTOS:
        image = photo(name)
        rows, columns = image.shape[0] // size, image.shape[1] // size
        wholes.append(image[: rows * size, : columns * size].transpose(2, 0, 1).astype(np.float32) / 255)
    test = np.concatenate([tiles(whole, size) for whole in wholes])
    data = Dataset("photos", np.ascontiguousarray(train), test, None, None, binary=True)
    return Photos(data, wholes)
