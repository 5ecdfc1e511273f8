"""The photo restorer (aekit.sklearn.PhotoRestorer): trained on random crops of numpy images of any sizes through the
trainer, images restored each at its own size, layout and type, an honest score, scikit-learn's parameter contract,
and bad input refused in one line."""

import pickle
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from aekit.errors import AekitError
from aekit.evaluation.measures import psnr
from aekit.sklearn import ParameterError, PhotoRestorer, estimator, outlier_detector
from aekit.sklearn.restoration import SCORE_SEED
from aekit.uses.enhance import denoise_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A net of 8 channels, one level: tiny, and it takes images of at least 2 pixels.
TINY = {"width": 8, "levels": 1, "blocks": 1, "patch_size": 8, "batch_size": 16, "device": "cpu", "random_state": 0}


def smooth(height: int, width: int, channels: int | None = None, seed: int = 0) -> np.ndarray:
    """A smooth float32 image in [0.2, 0.8]: waves a denoiser learns to tell from noise in a few steps."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 5.0
    image = 0.5 + 0.3 * np.sin(x + rng.uniform(0, 6)) * np.cos(y + rng.uniform(0, 6))
    image = image if channels is None else np.stack([image * (0.8 + 0.1 * c) for c in range(channels)], -1)
    return image.astype(np.float32)


def restorer(**params) -> PhotoRestorer:
    return PhotoRestorer(**{**TINY, "patches_per_epoch": 32, "max_iter": 1, **params})


@pytest.fixture(scope="module")
def grey():
    """Two grey images of two sizes, one of uint8 pixels and one of floats."""
    return [(smooth(24, 20) * 255).round().astype(np.uint8), smooth(18, 30, seed=1)]


@pytest.fixture(scope="module")
def fitted(grey):
    return restorer().fit(grey)


def test_images_of_two_sizes_come_back_each_at_its_own_size_layout_and_type(grey, fitted):
    assert fitted.n_iter_ == 1 and len(fitted.loss_curve_) == 1 and fitted.n_channels_in_ == 1
    assert fitted.spec_.shape == (1, 8, 8)  # the crops it trained on
    out = fitted.transform(grey)
    assert isinstance(out, list) and [(o.shape, o.dtype) for o in out] == [
        ((24, 20), np.uint8),
        ((18, 30), np.float32),
    ]
    # The path of `aekit denoise`: the same function, the same pixels.
    np.testing.assert_array_equal(out[1], np.clip(denoise_image(fitted.model_, grey[1]), 0, 1))
    as_float64 = fitted.transform([grey[1].astype(np.float64)])[0]
    assert as_float64.dtype == np.float64 and 0 <= as_float64.min() and as_float64.max() <= 1
    # An array of n images comes back as an array; (height, width, 1) keeps its channel axis.
    stacked = fitted.transform(np.stack([grey[1], grey[1]])[..., None])
    assert stacked.shape == (2, 18, 30, 1) and np.allclose(stacked[0, ..., 0], out[1])


def test_colour_images_keep_their_channels_last():
    colour = [smooth(16, 12, 3), (smooth(12, 20, 3, seed=2) * 255).astype(np.uint8)]
    fitted = restorer().fit(colour)
    out = fitted.transform(colour)
    assert fitted.n_channels_in_ == 3 and fitted.spec_.shape == (3, 8, 8)
    assert [(o.shape, o.dtype) for o in out] == [((16, 12, 3), np.float32), ((12, 20, 3), np.uint8)]


def test_the_score_beats_the_noisy_input_after_a_little_training(grey):
    clean = [smooth(32, 32, seed=s) for s in range(3)]
    # The PSNR of the very noisy images that score restores: one draw of sigma 25 from the seed score takes.
    noise = np.random.default_rng(SCORE_SEED)
    noisy = np.mean(
        [psnr((c + np.float32(25 / 255) * noise.standard_normal(c.shape, np.float32))[None], c[None]) for c in clean]
    )
    assert 19.5 < noisy < 21  # 20.2 dB expected
    trained = restorer(max_iter=4, patches_per_epoch=256, patch_size=16, learning_rate=5e-3).fit(clean)
    score = trained.score(clean)
    assert score == trained.score(clean)  # seeded: the same noise every time
    assert score > noisy + 5, (score, noisy)  # 28.5 dB against 20.0


@pytest.mark.parametrize("noise, expected", [("gaussian", 26.0), ("masking", 18.7)])
def test_the_score_corrupts_with_the_noise_the_model_learnt(grey, noise, expected, monkeypatch):
    fitted = restorer(noise=noise, noise_level=0.05, sigma=(13,)).fit(grey)  # sigma 13: a level of 0.05 too
    monkeypatch.setattr("aekit.sklearn.restoration.denoise_image", lambda model, noisy: noisy)  # restores nothing
    # What a restorer that changes nothing scores is the PSNR of the corrupted input: Gaussian noise of 0.05 gives
    # 26 dB; masking 5% of pixels of mean square 0.27 gives 10 log10(1 / (0.05 * 0.27)) = 18.7 dB.
    assert fitted.score(grey) == pytest.approx(expected, abs=0.8)


def test_an_upscaler_enlarges_by_the_factor_asked_and_refuses_others(grey):
    fitted = restorer(restore="upscale", factors=(2, 3)).fit(grey)
    small = [grey[0][::2, ::2], grey[1][::3, ::3]]
    out = fitted.transform(small, factor=2)
    assert [(o.shape, o.dtype) for o in out] == [((24, 20), np.uint8), ((12, 20), np.float32)]
    assert fitted.transform([small[1]], factor=3)[0].shape == (18, 30)
    with pytest.raises(AekitError, match=r"^this run upscales by 2, 3; choose one with factor$"):
        fitted.transform(small)
    with pytest.raises(AekitError, match=r"^factor=4: this run upscales by 2, 3; give one of those$"):
        fitted.transform(small, factor=4)
    both = fitted.score(grey)
    assert np.isfinite(both) and min(fitted.score(grey, factor=2), fitted.score(grey, factor=3)) <= both


def test_parameters_clone_and_pickle_as_for_the_other_estimators(grey, fitted):
    params = PhotoRestorer().get_params()
    assert {"restore", "sigma", "factors", "width", "levels", "blocks"} <= params.keys()
    assert {"patch_size", "patches_per_epoch", "max_iter", "batch_size", "learning_rate", "schedule"} <= params.keys()
    assert {"random_state", "device"} <= params.keys() and "loss" not in params and "n_components" not in params
    assert params["patch_size"] == 40 and params["restore"] == "denoise"
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params() and not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.transform(grey)
    assert twin.set_params(sigma=(0, 50)).sigma == (0, 50)
    pickled = pickle.dumps(fitted)
    assert b"torch" not in pickled  # weights travel as numpy arrays
    loaded = pickle.loads(pickled)
    assert loaded.get_params() == fitted.get_params()
    for before, after in zip(fitted.transform(grey), loaded.transform(grey)):
        np.testing.assert_array_equal(before, after)
    assert loaded.score(grey) == fitted.score(grey)
    again = restorer().fit(grey)  # the same seed trains the same weights
    np.testing.assert_array_equal(again.transform(grey)[1], fitted.transform(grey)[1])


BAD_INPUT = [
    ("fit", [], "no images were given; give at least one"),
    ("fit", np.zeros((4, 4)), "the images are a ndarray of shape (4, 4); give a list of images"),
    ("fit", [np.zeros((5, 20), np.float32)], "images[0] is 20x5 pixels, smaller than 8x8, the crops of patch_size=8"),
    ("fit", [np.full((9, 9), 2.0)], "images[0] holds values from 2 to 2, outside [0, 1]; give clean images"),
    ("fit", [np.zeros((9, 9), np.int64)], "images[0] holds int64 values; give uint8 pixels (0-255) or floats"),
    ("fit", [np.full((9, 9), np.nan)], "images[0] holds NaN or infinite values"),
    ("fit", [np.zeros((9, 9)), np.zeros((9, 9, 3))], "images[1] has 3 channel(s) and images[0] 1"),
    ("fit", [np.zeros((3, 9, 12))], "images[0] has shape (3, 9, 12): channels go last"),
    ("transform", [np.zeros((9, 9, 3), np.uint8)], "images[0] has 3 channel(s), but this PhotoRestorer was fitted"),
    ("transform", [np.zeros((9, 1), np.uint8)], "images[0] is 1x9 pixels, smaller than 2x2, what levels=1 halves"),
    ("transform", [np.zeros((0, 9), np.uint8)], "images[0] has shape (0, 9); give each image as (height, width)"),
    ("score", [np.full((9, 9), -0.5)], "images[0] holds values from -0.5 to -0.5, outside [0, 1]"),
    ("factor", [np.zeros((9, 9))], "factor=2 is for upscaling, and this PhotoRestorer denoises (restore='denoise')"),
]


@pytest.mark.parametrize("method, images, message", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_images_are_refused_in_one_line_in_the_estimators_words(fitted, method, images, message):
    estimator = restorer() if method == "fit" else fitted
    if method == "factor":
        action = lambda: estimator.transform(images, factor=2)  # noqa: E731
    else:
        action = lambda: getattr(estimator, method)(images)  # noqa: E731
    with pytest.raises(ValueError) as raised:
        action()
    assert isinstance(raised.value, AekitError) and message in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value) and "--" not in str(raised.value)
    if method == "fit":
        assert not hasattr(estimator, "model_")


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"patch_size": 0}, ValueError, "patch_size == 0, must be >= 1"),
        (
            {"levels": 4},
            ParameterError,
            "levels=4 halves the image 4 times, more than images of 8x8 allow; use at most 3",
        ),
        ({"schedule": "warm"}, ParameterError, "unknown schedule 'warm'; use constant or cosine"),
        ({"sigma": (60, 20)}, ParameterError, "sigma=(60, 20) must be one level or low,high between 0 and 255"),
        ({"width": 10**5}, ParameterError, "width=100000 and levels=1 and blocks=1 make a model of"),
    ],
)
def test_bad_hyper_parameters_are_refused_at_fit_naming_the_parameter(grey, params, error, message):
    estimator = restorer(**params)
    with pytest.raises(error, match=re.escape(message)):
        estimator.fit(grey)
    assert not hasattr(estimator, "model_")


def test_transform_before_fit_raises_what_scikit_learn_raises(grey):
    with pytest.raises(NotFittedError):
        restorer().transform(grey)
    with pytest.raises(NotFittedError):
        restorer().score(grey)


def test_the_estimator_of_the_restoration_family_is_named_by_the_refusal_of_a_row_estimator():
    for make in (estimator, outlier_detector):
        with pytest.raises(
            ParameterError, match=r"^red restores images of any size rather than coding rows; use Photo"
        ):
            make("red")
