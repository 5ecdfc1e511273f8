"""Whole photos at their own size (issue 27, item 3): `aekit denoise` and `aekit upscale` of a folder of images of mixed
sizes, and the same in Python on one image, in overlapping tiles equal to the whole image's output. A small fully
convolutional family defined here stands in for any model that takes any size."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_refused, run_cli
from PIL import Image

from aekit.data.images import decoded
from aekit.errors import AekitError, DataError
from aekit.models import FAMILIES, AutoEncoder, Gaussian, ModelConfig, build_model, model_config, option, register
from aekit.training.run_folder import CONFIG, WEIGHTS, weights_bytes
from aekit.uses.enhance import denoise_image, upscale_image

NAME = "tiny-restorer"


class TinyRestorer(AutoEncoder):
    """restore(x) = x + 0.1 conv(tanh(conv(x))) (two 3x3 convolutions, zero-padded: each output pixel sees 2 pixels
    around it); enlarge(low, F) = restore(bicubic(low, F))."""

    takes_any_size = True
    margin = 2

    def __init__(self, shape, task, factors):
        channels = shape[0]
        net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, channels, 3, padding=1)
        )
        super().__init__(net, torch.nn.Identity(), Gaussian, example_shape=tuple(shape))
        self.task, self.factors = task, tuple(factors) if task == "upscale" else ()
        self.seen = []  # the size of every input restore was given

    def restore(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return x + 0.1 * self.encoder(x)

    def enlarge(self, low, factor):
        return self.restore(F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False))


@pytest.fixture(scope="module")
def family():
    @dataclass(frozen=True)
    class TinyRestorerConfig(ModelConfig):
        """A fully convolutional restorer of images of any size."""

        family = NAME
        label = "Tiny restorer"
        model_class = TinyRestorer

        task: str = option("denoise", "denoise or upscale")
        factors: tuple[int, ...] = option((2,), "the factors it upscales by")

        def build(self) -> TinyRestorer:
            return TinyRestorer(self.shape, self.task, self.factors)

    register(TinyRestorerConfig)
    yield TinyRestorerConfig
    FAMILIES.pop(NAME)


def _model(family, channels=3, **options):
    torch.manual_seed(0)
    return build_model(family(shape=(channels, 8, 8), code_dim=1, likelihood="gaussian", **options)).eval()


def _run(folder, model):
    """A run folder of ``model``, as `aekit train` leaves one (its config and weights)."""
    folder.mkdir()
    (folder / CONFIG).write_text(json.dumps({"model": model.config.to_dict()}))
    (folder / WEIGHTS).write_bytes(weights_bytes(model))
    return folder


def _image(rng, channels, height, width):
    return rng.integers(0, 256, (channels, height, width), dtype=np.uint8)


@pytest.mark.parametrize("tile", [1, 5, 8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiles_put_together_equal_the_whole_image(family, tile, channels):
    model = _model(family, channels)
    image = _image(np.random.default_rng(tile), channels, 21, 34)
    whole = denoise_image(model, image, tile=0)
    assert whole.shape == image.shape and whole.dtype == np.float32
    np.testing.assert_allclose(denoise_image(model, image, tile=tile), whole, atol=1e-5)
    assert np.abs(whole - image / 255).max() > 0.01  # the model changes the image


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("tile", [3, 7, 16])
def test_upscaling_tiles_put_together_equal_the_whole_image(family, tile, factor):
    model = _model(family, task="upscale", factors=(2, 3))
    image = _image(np.random.default_rng(tile), 3, 11, 19)
    whole = upscale_image(model, image, factor, tile=0)
    assert whole.shape == (3, 11 * factor, 19 * factor)
    np.testing.assert_allclose(upscale_image(model, image, factor, tile=tile), whole, atol=1e-5)


def test_a_large_image_goes_through_the_model_tile_by_tile(family):
    model = _model(family, 1)
    image = _image(np.random.default_rng(0), 1, 100, 70)
    model.seen.clear()
    denoise_image(model, image, tile=32)
    # 4 x 3 tiles, each with at most the margin (2) of the image around it on every side.
    assert len(model.seen) == 12
    assert max(max(size) for size in model.seen) == 32 + 2 * 2
    model.seen.clear()
    denoise_image(model, image, tile=0)
    assert model.seen == [(100, 70)]


def test_one_image_in_python_keeps_its_layout_and_a_grey_one_becomes_colour(family):
    grey, colour = _model(family, 1), _model(family, 3)
    image = np.random.default_rng(1).random((9, 4), dtype=np.float32)
    assert denoise_image(grey, image).shape == (9, 4)
    assert denoise_image(colour, image).shape == (3, 9, 4)
    np.testing.assert_allclose(denoise_image(colour, image), denoise_image(colour, np.stack([image] * 3)))
    # An image smaller than a tile or than any stride: taken as it is.
    assert denoise_image(grey, np.ones((1, 1), np.uint8)).shape == (1, 1)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((0, 5)), "of at least one pixel"),
        (np.zeros((3, 0, 5)), "of at least one pixel"),
        (np.zeros((3, 4, 5)), "the run takes one image of 1 channel"),
        (np.zeros((2, 3, 4, 5)), "has shape"),
    ],
)
def test_an_image_the_model_cannot_take_is_refused(family, image, match):
    with pytest.raises(DataError, match=match):
        denoise_image(_model(family, 1), image)


def test_what_a_model_cannot_do_is_refused(family, digits):
    denoiser, upscaler = _model(family), _model(family, task="upscale", factors=(2, 3))
    image = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(AekitError, match="upscales by 2, 3; choose one with --factor"):
        upscale_image(upscaler, image)
    with pytest.raises(AekitError, match="--factor 4: this run upscales by 2, 3;"):
        upscale_image(upscaler, image, 4)
    with pytest.raises(AekitError, match="trained to upscale, so it cannot denoise"):
        denoise_image(upscaler, image)
    with pytest.raises(AekitError, match="not trained to upscale"):
        upscale_image(denoiser, image, 2)
    with pytest.raises(AekitError, match="--tile T > 0"):
        denoise_image(denoiser, image, tile=-1)
    denoiser.margin = None  # a model that does not say how far its output pixels see
    with pytest.raises(AekitError, match="states no margin"):
        denoise_image(denoiser, image, tile=8)
    assert denoise_image(denoiser, image).shape == image.shape
    fixed = build_model(FAMILIES["ae"](shape=digits.shape, code_dim=4))
    with pytest.raises(AekitError, match="training size only"):
        denoise_image(fixed, np.zeros((8, 8)))


@pytest.fixture
def photos(tmp_path):
    """A folder of images of mixed sizes and kinds, named as a user names them."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "photos"
    (folder / "holiday").mkdir(parents=True)
    Image.fromarray(_image(rng, 3, 13, 17).transpose(1, 2, 0)).save(folder / "a.png")
    Image.fromarray(_image(rng, 3, 30, 9).transpose(1, 2, 0)).save(folder / "holiday" / "b.jpg", quality=95)
    Image.fromarray(_image(rng, 1, 5, 6)[0]).save(folder / "grey.png")
    Image.fromarray((rng.integers(0, 65536, (7, 3))).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(_image(rng, 4, 6, 6).transpose(1, 2, 0), "RGBA").save(folder / "alpha.png")
    Image.fromarray(_image(rng, 3, 8, 5).transpose(1, 2, 0)).convert("P").save(folder / "palette.png")
    Image.fromarray(_image(rng, 1, 1, 1)[0]).save(folder / "dot.png")  # smaller than any network's stride
    return folder


NAMES = {"a.png": "a.png", "holiday/b.jpg": "holiday/b.png", "grey.png": "grey.png", "deep.png": "deep.png"}
NAMES |= {"alpha.png": "alpha.png", "palette.png": "palette.png", "dot.png": "dot.png"}


def test_denoise_writes_each_photo_at_its_size_in_colour_under_its_name(family, photos, tmp_path, capsys):
    model = _model(family)
    run = _run(tmp_path / "run", model)
    status, _, err = run_cli(capsys, "denoise", str(run), str(photos), "--out", str(tmp_path / "clean"), "--tile", "4")
    assert status == 0, err
    written = sorted(p.relative_to(tmp_path / "clean").as_posix() for p in (tmp_path / "clean").rglob("*.png"))
    assert written == sorted(NAMES.values())
    for name, out in NAMES.items():
        pixels = decoded(photos / name, 3)
        got = np.asarray(Image.open(tmp_path / "clean" / out).convert("RGB")).transpose(2, 0, 1)
        expected = np.clip(denoise_image(model, pixels, tile=0), 0, 1) * 255
        assert got.shape == pixels.shape
        assert np.abs(got - expected).max() <= 0.5 + 1e-3, name


def test_upscale_writes_each_photo_f_times_its_size(family, photos, tmp_path, capsys):
    run = _run(tmp_path / "run", _model(family, task="upscale", factors=(2, 3)))
    big = tmp_path / "big"
    assert run_cli(capsys, "upscale", str(run), str(photos), "--out", str(big), "--factor", "3")[0] == 0
    for name, out in NAMES.items():
        height, width = decoded(photos / name, 3).shape[1:]
        assert Image.open(big / out).size == (3 * width, 3 * height)
    single = _run(tmp_path / "x2", _model(family, task="upscale", factors=(2,)))
    assert run_cli(capsys, "upscale", str(single), str(photos / "a.png"), "--out", str(tmp_path / "a2"))[0] == 0
    assert Image.open(tmp_path / "a2" / "a.png").size == (34, 26)


def _copy(name, to, size=None):
    """A change to the photos folder: ``to``, a copy of the image ``name`` (its first ``size`` bytes)."""

    def make(folder):
        (folder / to).write_bytes((folder / name).read_bytes()[:size])

    return make


@pytest.mark.parametrize(
    "make, command, run, extra, out, match",
    [
        (_copy("a.png", "rgb.png"), "denoise", "grey", [], "clean", "is a colour image"),
        (_copy("holiday/b.jpg", "cut.jpg", 300), "denoise", "rgb", [], "clean", "cut.jpg"),
        (_copy("a.png", "empty.png", 0), "denoise", "rgb", [], "clean", "empty.png"),
        (None, "upscale", "x23", [], "big", "choose one with --factor"),
        (None, "upscale", "x23", ["--factor", "4"], "big", "--factor 4: this run upscales by"),
        (None, "denoise", "rgb", ["--tile", "-2"], "clean", "--tile T > 0"),
        (None, "upscale", "rgb", ["--factor", "2"], "big", "not trained to upscale"),
        (None, "denoise", "rgb", [], "clean.npy", "written as a folder of PNGs"),
    ],
)
def test_bad_photos_and_options_are_one_line_exit_2_and_nothing_written(
    family, photos, tmp_path, capsys, make, command, run, extra, out, match
):
    runs = {"rgb": _model(family), "grey": _model(family, 1), "x23": _model(family, task="upscale", factors=(2, 3))}
    for name, model in runs.items():
        _run(tmp_path / name, model)
    if make is not None:
        make(photos)
    argv = [command, str(tmp_path / run), str(photos), "--out", str(tmp_path / out), *extra]
    assert_refused(capsys, tmp_path, *argv, match=match)


def test_a_fully_convolutional_rate_distortion_run_denoises_photos_as_decompress_gives_them_back(
    tmp_path, photos, capsys
):
    torch.manual_seed(0)
    config = FAMILIES["rd-ae"](shape=(3, 8, 8), net="fully-conv", hidden=(4, 8), code_dim=2, likelihood="gaussian")
    run = _run(tmp_path / "rd", build_model(config))
    assert run_cli(capsys, "denoise", str(run), str(photos), "--out", str(tmp_path / "clean"))[0] == 0
    assert run_cli(capsys, "compress", str(run), str(photos), "--out", str(tmp_path / "c.aekc"))[0] == 0
    assert run_cli(capsys, "decompress", str(run), str(tmp_path / "c.aekc"), "--out", str(tmp_path / "back"))[0] == 0
    for out in NAMES.values():
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "clean" / out)), np.asarray(Image.open(tmp_path / "back" / out))
        )
    # It states no margin: whole images only.
    assert_refused(
        capsys,
        tmp_path,
        "denoise",
        str(run),
        str(photos),
        "--out",
        str(tmp_path / "c2"),
        "--tile",
        "8",
        match="states no margin",
    )


def test_a_run_of_its_training_size_upscales_by_its_own_factor_only(tmp_path, capsys):
    torch.manual_seed(0)
    run = _run(tmp_path / "x2", build_model(FAMILIES["ae"](shape=(1, 8, 8), code_dim=4, task="upscale", factor=2)))
    np.save(tmp_path / "small.npy", np.zeros((3, 4, 4), np.float32))
    argv = ["upscale", str(run), str(tmp_path / "small.npy")]
    assert_refused(
        capsys,
        tmp_path,
        *argv,
        "--out",
        str(tmp_path / "big.npy"),
        "--factor",
        "3",
        match="--factor 3: this run upscales by 2;",
    )
    assert run_cli(capsys, *argv, "--out", str(tmp_path / "big.npy"), "--factor", "2")[0] == 0
    assert np.load(tmp_path / "big.npy").shape == (3, 8, 8)


@pytest.mark.parametrize("task, factor", [("denoise", 1), ("upscale", 2), ("upscale", 3)])
@pytest.mark.parametrize("tile", [5, 16])
def test_tiles_of_the_restoration_family_equal_the_whole_image(task, factor, tile):
    # Its stride-2 levels sample the input on a grid of 2^levels pixels: tiles must start on that grid.
    torch.manual_seed(0)
    shape = (3, 16, 16)
    config = model_config("red", shape, restore=task, factors=(2, 3), width=4, levels=2, blocks=1)
    model = build_model(config).eval()
    image = _image(np.random.default_rng(tile), 3, 23, 29)
    if task == "denoise":
        whole, tiles = denoise_image(model, image, tile=0), denoise_image(model, image, tile=tile)
    else:
        whole, tiles = upscale_image(model, image, factor, tile=0), upscale_image(model, image, factor, tile=tile)
    np.testing.assert_allclose(tiles, whole, atol=1e-5)
