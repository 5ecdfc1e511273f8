"""The restoration family, red: restore at any size and channels, the corruption drawn afresh, the upscale factors, a
trained model beating its noisy input, the run folder and the commands, and what it says it can (not) do."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_refused, run_cli
from PIL import Image

from aekit.errors import AekitError, DataError
from aekit.evaluation.measures import psnr
from aekit.models import build_model, model_config
from aekit.training import run_folder
from aekit.uses import enhance


def red(shape=(1, 16, 16), **options):
    torch.manual_seed(0)
    return build_model(model_config("red", shape, width=8, **options))


def smooth_images(n, channels=1, size=16, seed=0):
    """Smooth random images in [0, 1]: sums of a few low-frequency waves (what a denoiser can tell from noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    waves = [
        0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(0.3, 1.2) * xx + rng.uniform(0.3, 1.2) * yy + rng.uniform(0, 1)))
        for _ in range(n * channels)
    ]
    return np.stack(waves).reshape(n, channels, size, size).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_restore_keeps_any_shape(channels):
    model = red((channels, 16, 16))
    for height, width in [(17, 23), (16, 16), (5, 9)]:
        x = torch.rand(2, channels, height, width)
        assert model.restore(x).shape == x.shape
    with pytest.raises(DataError, match="smaller than this run's 4 pixels"):
        model.restore(torch.rand(1, channels, 3, 9))


def test_reconstruct_takes_the_run_size_in_any_layout():
    model = red()
    flat = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)  # (n, h, w) of a 1-channel run
    assert model.reconstruct(flat).shape == (3, 16, 16)
    assert enhance.denoise(model, (flat * 255).astype(np.uint8)).shape == (3, 16, 16)


def test_output_depends_on_no_pixel_beyond_the_margin():
    model = red((1, 64, 64), levels=3, blocks=2)
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    model.restore(x)[0, 0, 64, 64].backward()
    reach = (x.grad[0, 0] != 0).nonzero().sub(64).abs().max().item()
    assert 0 < reach <= model.margin


def test_loss_draws_fresh_noise_each_call_and_the_blind_range():
    x = torch.rand(4, 1, 16, 16)
    model = red()
    assert model.loss(x).total.item() != model.loss(x).total.item()
    blind = red(sigma=(0, 55))
    torch.manual_seed(1)
    noisy = blind._noisy(torch.zeros(2000, 1, 4, 4))
    spread = noisy.flatten(1).std(1) * 255
    assert spread.min() < 5 and spread.max() > 50  # each image at its own sigma over 0..55
    assert blind.noise_level == pytest.approx(55 / 255)


@pytest.mark.parametrize("noise", ["masking", "salt-and-pepper"])
def test_the_other_noise_kinds_are_drawn_afresh_at_their_share(noise):
    model = red(noise=noise, noise_level=0.2)
    assert model.noise == noise and model.noise_level == 0.2
    x = torch.full((200, 1, 16, 16), 0.5)
    x[:, :, 0, 0] = torch.tensor([0.0, 1.0]).repeat(100)[:, None]  # the batch's minimum and maximum
    noisy = model._noisy(x)
    hit = noisy != x
    assert hit.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert not torch.equal(hit, model._noisy(x) != x)
    changed = noisy[hit]
    assert set(changed.unique().tolist()) <= ({0.0} if noise == "masking" else {0.0, 1.0})


def test_upscale_factors():
    model = red((3, 16, 16), restore="upscale", factors=(2, 3))
    assert model.factors == (2, 3) and model.noise is None
    low = model.shrink(torch.rand(2, 3, 16, 16), 3)
    assert low.shape == (2, 3, 5, 5)
    assert model.enlarge(low, 3).shape == (2, 3, 15, 15)
    with pytest.raises(AekitError, match="upscales by 2, 3, not 4"):
        model.enlarge(low, 4)
    assert torch.isfinite(model.loss(torch.rand(2, 3, 16, 16)).total)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sigma": (300,)}, "--sigma 300 must be one level or low,high between 0 and 255"),
        ({"sigma": (30, 10)}, "--sigma 30,10"),
        ({"factors": (1,)}, "--factors 1 must be distinct whole numbers of at least 2"),
        ({"levels": 5}, "--levels 5 halves the image 5 times, more than images of 16x16 allow; use at most 4"),
        ({"restore": "sharpen"}, "unknown --restore sharpen"),
        ({"noise": "blur"}, "unknown noise 'blur'"),
        ({"noise": "masking", "noise_level": 1.5}, "--noise-level 1.5 must be >= 0 .and <= 1 for masking."),
    ],
)
def test_bad_options_refused_in_one_line(options, match):
    with pytest.raises(AekitError, match=match) as error:
        model_config("red", (1, 16, 16), **options)
    assert "\n" not in str(error.value)


def test_capabilities():
    model = red()
    assert model.gives_codes is False and model.takes_any_size and model.task == "denoise"
    assert build_model(model_config("ae", (1, 16, 16))).gives_codes is True
    with pytest.raises(AekitError, match="cannot be decoded"):
        model.decode(torch.zeros(1, 8, 4, 4))


@pytest.fixture
def one_thread():
    """One thread of torch: a small net's steps on a loaded 2-core machine run 20 times faster than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_lowers_the_loss_and_beats_the_noisy_input(one_thread):
    clean = torch.from_numpy(smooth_images(64))
    model = red(sigma=(25,))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(150):
        loss = model.loss(clean[torch.randint(64, (16,))]).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    model.eval()
    torch.manual_seed(5)
    noisy = model.corrupt(clean)
    with torch.no_grad():
        restored = model.restore(noisy).numpy()
    assert psnr(restored, clean.numpy()) > psnr(noisy.numpy(), clean.numpy()) + 2


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("red") / "images"
    folder.mkdir()
    for i, image in enumerate(smooth_images(24, 3)):
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_cli_denoise_run(capsys, images, tmp_path, one_thread):
    run = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--model", "red", "--dataset", str(images), "--width", "8",
                             "--epochs", "2", "--out", str(run))  # fmt: skip
    assert status == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr_denoised_db"] > 0 and "knn_accuracy" not in metrics
    assert (run / "figures" / "denoising.png").is_file() and not (run / "figures" / "codes.png").exists()
    model = run_folder.load(run)
    assert model.gives_codes is False and model.config.sigma == (25,)
    status, _, err = run_cli(capsys, "evaluate", str(run))
    assert status == 0, err
    out = tmp_path / "denoised"
    status, _, err = run_cli(capsys, "denoise", str(run), str(images), "--out", str(out))
    assert status == 0 and len(list(out.glob("*.png"))) == 24, err
    x = smooth_images(3, 3)
    assert enhance.denoise(model, x).shape == x.shape
    assert_refused(capsys, tmp_path, "train", "--model", "red", "--dataset", str(images), "--sigma", "0,300",
                   "--out", str(tmp_path / "bad"), match="--sigma 0,300 must be one level or low,high")  # fmt: skip
    for command in (["compress", str(run), str(images), "--out", str(tmp_path / "x.aekc")],
                    ["export-projector", str(run)],
                    ["score", str(run), str(images), "--out", str(tmp_path / "s.csv")],
                    ["upscale", str(run), str(images), "--out", str(tmp_path / "big")]):  # fmt: skip
        assert_refused(capsys, tmp_path, *command, match="")


def test_cli_upscale_run(capsys, images, tmp_path, one_thread):
    run = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--model", "red", "--restore", "upscale", "--factors", "2,4",
                             "--dataset", str(images), "--width", "8", "--epochs", "1", "--out", str(run))  # fmt: skip
    assert status == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"psnr_x2_db", "psnr_x4_db", "psnr_bicubic_x2_db", "psnr_bicubic_x4_db"} <= set(metrics)
    assert (run / "figures" / "upscaling.png").is_file()
    small = tmp_path / "small.npy"
    np.save(small, smooth_images(3, 3, size=8))
    assert_refused(capsys, tmp_path, "upscale", str(run), str(small), "--out", str(tmp_path / "big.npy"),
                   match="this run upscales by 2, 4; choose one with --factor")  # fmt: skip
    status, _, err = run_cli(capsys, "upscale", str(run), str(small), "--out", str(tmp_path / "big.npy"),
                             "--factor", "2")  # fmt: skip
    assert status == 0, err
    assert np.load(tmp_path / "big.npy").shape == (3, 3, 16, 16)
    assert_refused(capsys, tmp_path, "denoise", str(run), str(small), "--out", str(tmp_path / "d.npy"),
                   match="trained to upscale")  # fmt: skip
