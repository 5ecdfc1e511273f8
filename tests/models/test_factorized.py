"""The factorized family (issue 30, item 1 of aekit's factorized and hyperprior models): Balle et al.'s 2017 codec,
the hyperprior's GDN transforms with the code map under the per-channel factorized prior; its map at 1/16 of any
image, its rate, training, photos of mixed sizes and kinds coded each whole as a fully convolutional rd-ae's maps,
the refusals, and its ONNX export."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import assert_refused, photo_folder, run_cli, smooth_images
from PIL import Image

from aekit import codec
from aekit.data.images import decoded
from aekit.data.layout import as_float
from aekit.errors import AekitError, DataError
from aekit.models import build_model, model_config
from aekit.training.run_folder import CONFIG, WEIGHTS, weights_bytes
from aekit.uses.compress import compress, compress_images, compressed_names, decompress_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def factorized(shape=(3, 32, 32), **options):
    torch.manual_seed(0)
    options = {"code_dim": 6, "channels": 5, "likelihood": "gaussian", **options}
    return build_model(model_config("factorized", shape, **options))


def trained(steps=40, **options):
    """A tiny model fitted a few steps to smooth images: its prior is then near its code's spread."""
    model = factorized(**options)
    x = smooth_images(8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(x).total.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("height, width", [(32, 32), (37, 53), (1, 1), (16, 70)])
def test_the_code_map_is_a_sixteenth_of_any_image_and_its_rate_is_the_factorized_prior_s(height, width):
    model = factorized().eval()
    x = torch.rand(2, 3, height, width)
    y = model.map_symbols(x)
    assert y.shape == (2, 6, math.ceil(height / 16), math.ceil(width / 16)) == (2, 6, *model.map_size(height, width))
    assert y.dtype == torch.int64
    assert model.restore(x).shape == x.shape
    assert model.code_shape == (6, 2, 2) and model.takes_any_size and model.code_storage == "maps"
    x = torch.rand(4, 3, 32, 32)
    bits = model.prior.rate_bits(model.encode(x))
    assert torch.allclose(model.rate_bits(x), bits)
    assert torch.allclose(model.loss(x).parts["rate_bits"], bits.mean())


def test_its_transforms_are_the_hyperprior_s():
    ours = factorized().state_dict()
    hyperprior = build_model(model_config("hyperprior", (3, 32, 32), code_dim=6, channels=5, likelihood="gaussian"))
    torch.manual_seed(0)
    theirs = build_model(hyperprior.config).state_dict()
    transforms = [key for key in ours if key.startswith(("encoder.", "decoder."))]
    assert len(transforms) == 28  # 4 convolutions and 3 GDNs each way, two tensors each
    for key in transforms:
        assert torch.equal(ours[key], theirs[key]), key
    assert sum(v.numel() for k, v in ours.items() if k.startswith("prior.")) == 6 * 43  # no hyperprior


def test_training_lowers_the_loss_and_a_larger_lambda_buys_fewer_bits():
    x = smooth_images(8)
    before = factorized().eval().loss(x).total.item()
    results = {}
    for rate_lambda in (0.001, 1.0):
        parts = trained(40, rate_lambda=rate_lambda).loss(x).parts
        results[rate_lambda] = parts["reconstruction"].item(), parts["rate_bits"].item()
    assert results[0.001][0] < 0.5 * before
    assert results[1.0][1] < results[0.001][1] and results[1.0][0] > results[0.001][0]


@pytest.mark.parametrize(
    "shape, options, match",
    [
        ((64,), {}, "the factorized codec codes images"),
        ((3, 16, 16), {"channels": 0}, "--channels 0 must be at least 1"),
        ((3, 16, 16), {"rate_lambda": -1.0}, "--rate-lambda -1.0 must be a finite number >= 0"),
    ],
)
def test_bad_options_are_refused_in_one_line(shape, options, match):
    with pytest.raises(AekitError, match=match) as error:
        model_config("factorized", shape, **{"code_dim": 4, **options})
    assert "\n" not in str(error.value)


def test_its_defaults_are_balle_s_and_it_never_standardizes():
    config = model_config("factorized", (3, 64, 64), likelihood="gaussian", standardize=True)
    assert (config.channels, config.code_dim, config.rate_lambda, config.standardize) == (128, 192, 0.01, False)
    assert config.code_shape == (192, 4, 4)


def test_an_image_past_the_pixels_it_codes_whole_is_refused(monkeypatch):
    from aekit.models import gdn

    monkeypatch.setattr(gdn, "MAX_PIXELS", 40 * 40)
    model = factorized().eval()
    assert model.map_symbols(torch.rand(1, 3, 40, 40)).shape[-2:] == (3, 3)
    with pytest.raises(DataError, match="an image of 40x41 pixels is more than the 1600 this model codes whole"):
        model.map_symbols(torch.rand(1, 3, 40, 41))


@pytest.fixture
def photos(tmp_path):
    """Photos of mixed sizes and kinds: colour 37 x 53, grey, 16-bit, palette, 1 x 1, in a subfolder."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "photos"
    (folder / "holiday").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (53, 37, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 9, 3), dtype=np.uint8)).save(folder / "holiday" / "b.png")
    Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 65536, (21, 17)).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(rng.integers(0, 256, (8, 5, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 256, (1, 1), dtype=np.uint8)).save(folder / "dot.png")
    return folder


NAMES = ["a.png", "deep.png", "dot.png", "grey.png", "holiday/b.png", "palette.png"]


def test_photos_of_mixed_sizes_decode_as_the_model_restores_them_and_cost_what_it_counts(photos):
    model = trained()
    images = [decoded(photos / name, 3) for name in NAMES]
    data = compress_images(model, images, NAMES)
    stored, _ = codec.decode(data, "f.aekc")
    assert isinstance(stored, codec.EntropyCoded) and stored.sizes.shape == (len(NAMES), 4)  # rd-ae's maps
    assert compressed_names(data) == NAMES
    for name, image, back in zip(NAMES, images, decompress_images(model, data)):
        x = torch.from_numpy(as_float(image, name))[None]
        assert back.shape == image.shape
        np.testing.assert_array_equal(back, model.restore(x)[0].numpy())

    x = smooth_images(24, seed=1).numpy()
    bits = float(model.rate_bits(x).sum())
    data = compress(model, x)
    overhead = 32 + 8 + 24 * 16 + 4  # header, the tables' checksum and the words, the sizes, CRC
    assert bits > 500 and abs(8 * (len(data) - overhead) - bits) < 0.05 * bits + 64


def _run(folder, model):
    folder.mkdir()
    (folder / CONFIG).write_text(json.dumps({"model": model.config.to_dict()}))
    (folder / WEIGHTS).write_bytes(weights_bytes(model))
    return folder


def test_cli_codes_each_photo_at_its_size_in_colour_under_its_name(photos, tmp_path, capsys, monkeypatch):
    model = trained()
    run = _run(tmp_path / "run", model)
    status, _, err = run_cli(capsys, "compress", str(run), str(photos), "--out", str(tmp_path / "f.aekc"))
    assert status == 0, err
    status, _, err = run_cli(capsys, "decompress", str(run), str(tmp_path / "f.aekc"), "--out", str(tmp_path / "back"))
    assert status == 0, err
    for name in NAMES:
        image = decoded(photos / name, 3)
        got = np.asarray(Image.open(tmp_path / "back" / name).convert("RGB")).transpose(2, 0, 1)
        expected = model.restore(torch.from_numpy(as_float(image, name))[None])[0].numpy()
        assert got.shape == image.shape
        assert np.abs(got - np.clip(expected, 0, 1) * 255).max() <= 0.5 + 1e-3, name

    from aekit.models import gdn

    monkeypatch.setattr(gdn, "MAX_PIXELS", 40 * 40)
    assert_refused(
        capsys, tmp_path, "compress", str(run), str(photos), "--out", str(tmp_path / "g.aekc"),
        match="an image of 53x37 pixels is more than the 1600 this model codes whole; cut it into smaller images",
    )  # fmt: skip


def test_a_run_trained_on_photo_patches_resumes_evaluates_and_compresses(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", colour=(1, 3))
    run = tmp_path / "run"
    train = ["train", "--model", "factorized", "--loss", "mse", "--dataset", str(photos), "--patch", "16",
             "--code-dim", "4", "--channels", "4", "--rate-lambda", "0.05", "--patches-per-epoch", "16",
             "--no-progress", "--out", str(run)]  # fmt: skip
    status, _, err = run_cli(capsys, *train, "--epochs", "1")
    assert status == 0, err
    status, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress")
    assert status == 0, err
    assert len((run / "history.csv").read_text().splitlines()) == 3  # the header and two epochs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["rate_bits_per_example"] > 0 and metrics["bits_per_pixel"] > 0
    assert json.loads((run / "config.json").read_text())["model"]["channels"] == 4
    status, out, err = run_cli(capsys, "evaluate", str(run))
    assert status == 0, err
    assert json.loads(out)["rate_bits_per_example"] == pytest.approx(metrics["rate_bits_per_example"])
    status, _, err = run_cli(capsys, "compress", str(run), str(photos), "--out", str(tmp_path / "f.aekc"))
    assert status == 0, err
    status, _, err = run_cli(capsys, "decompress", str(run), str(tmp_path / "f.aekc"), "--out", str(tmp_path / "back"))
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(p.name for p in photos.iterdir())
    assert_refused(capsys, tmp_path, "compress", str(run), str(photos), "--out", str(tmp_path / "g.aekc"), "--search",
                   match="--search cannot be used with this run: a fully convolutional run's code maps")  # fmt: skip


def test_it_exports_to_onnx_for_any_height_and_width(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (pip install aekit[export])")
    from aekit.uses import export as onnx_export

    model = factorized(shape=(3, 13, 11)).eval()
    manifest = onnx_export.export(model, tmp_path / "onnx")
    assert manifest["encoder"]["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder, decoder = (
        ort.InferenceSession(str(tmp_path / "onnx" / name), options, providers=["CPUExecutionProvider"])
        for name in (onnx_export.ENCODER, onnx_export.DECODER)
    )
    x = np.random.default_rng(0).random((2, 3, 37, 53), dtype=np.float32)
    code = encoder.run(None, {"x": x})[0]
    assert np.array_equal(code, model.map_symbols(torch.from_numpy(x)).numpy())
    image = decoder.run(None, {"code": code})[0][..., :37, :53]
    np.testing.assert_allclose(image, model.restore(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_scikit_learn_says_what_the_factorized_codec_is_for():
    from aekit.sklearn import ParameterError, estimator

    with pytest.raises(ParameterError, match="factorized codes photos of any size rather than rows; train it with"):
        estimator("factorized")
