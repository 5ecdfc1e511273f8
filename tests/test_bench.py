"""The benchmark scripts' bookkeeping: rewriting their own sections of RESULTS.md, the quality benchmark's saved
rows (kept for the same settings, dropped for others, skipped with --resume), the speed benchmark's reference
data path, and the rate-distortion benchmark's measures (Bjontegaard's delta rate, SSIM)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MNIST_DIR, needs_mnist
from torch.utils.data import DataLoader

from aekit.models import build_model, model_config
from aekit.training.trainer import TrainSettings, train
from bench import quality_mnist, train_speed
from bench.codecs import bd_rate, overlap, rate_at, ssim
from bench.mnist_runs import fit, write_section

RESULTS = """# Results

## Quality

Intro.

### Quick mode

old quick

### Full mode

old full

## Speed

speed text
"""


def test_a_subsection_is_replaced_in_place(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS)
    write_section(path, "### Quick mode", "### Quick mode\n\nnew quick\n", within="## Quality")
    assert path.read_text() == RESULTS.replace("old quick", "new quick")


def test_a_missing_subsection_goes_at_the_end_of_its_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS)
    write_section(path, "### CPU mode", "### CPU mode\n\ncpu rows\n", within="## Quality")
    assert path.read_text() == RESULTS.replace("old full\n", "old full\n\n### CPU mode\n\ncpu rows\n")


def test_a_section_is_replaced_up_to_the_next_of_its_level_or_appended(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS)
    write_section(path, "## Quality", "## Quality\n\nall new\n")
    assert path.read_text() == "# Results\n\n## Quality\n\nall new\n\n## Speed\n\nspeed text\n"
    write_section(path, "## Memory", "## Memory\n\nmemory text\n")
    assert path.read_text().endswith("## Speed\n\nspeed text\n\n## Memory\n\nmemory text\n")
    write_section(tmp_path / "new.md", "### Full mode", "### Full mode\n\nrows\n", within="## Quality")
    assert (tmp_path / "new.md").read_text() == "## Quality\n\n### Full mode\n\nrows\n"


def _row(label, key, **metrics):
    return {
        "label": label,
        "published_key": key,
        "code": 30,
        "settings": "s",
        "train_seconds": 1.0,
        "date": "2026-11-27",
        "device": "CPU",
        "torch": "2",
        "aekit": "0",
        "command": "python q.py",
        "wall_seconds": 60.0,
        **metrics,
    }


def test_saved_rows_are_kept_for_the_same_settings_and_dropped_for_others(tmp_path):
    path, mode = tmp_path / "quality_quick.json", quality_mnist.MODES["quick"]
    log = quality_mnist.Log()
    quality_mnist.SavedRows(path, mode, 0, log).put("pca", _row("PCA", "pca", sse_per_example=13.9))
    assert set(quality_mnist.SavedRows(path, mode, 0, log).rows) == {"pca"}
    assert quality_mnist.SavedRows(path, mode, 1, log).rows == {}
    assert quality_mnist.SavedRows(path, dataclasses.replace(mode, ae_epochs=2), 0, log).rows == {}
    assert json.loads(path.read_text())["rows"]["pca"]["sse_per_example"] == 13.9


def test_the_section_marks_what_reached_the_published_figures():
    mode = quality_mnist.MODES["cpu"]
    text = quality_mnist.section(
        mode,
        {
            "pca": _row("PCA", "pca", sse_per_example=13.874),
            "ae-mlp": _row("AE MLP", "ae", sse_per_example=3.2),
            "vae": _row("VAE", "vae", code=50, sse_per_example=20.0, nll=86.5, nll_samples=5000, nll_examples=10000),
        },
    )
    assert "| PCA: squared error per test image | 13.87 | 13.874 | yes | 1 |" in text  # within the rounding
    assert "| AE MLP: squared error per test image | 3.00 | 3.200 | no | 1 |" in text
    assert "| VAE: NLL (k=5000), nats | 86.76 | 86.500 | yes | 1 |" in text
    assert "not reached in this run: AE MLP." in text
    assert "Not run in this mode: ae-conv." in text  # the CPU mode's fourth model
    assert "wall time 3.0 min" in text


@needs_mnist
def test_resume_skips_the_models_already_measured(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    argv = ["--data-dir", str(MNIST_DIR), "--quick", "--models", "pca", "--results", str(results)]
    assert quality_mnist.main(argv) == 0
    saved = json.loads((tmp_path / "quality_quick.json").read_text())["rows"]
    assert saved["pca"]["sse_per_example"] == pytest.approx(13.87, abs=0.01)
    assert "### Quick mode" in results.read_text() and "| PCA, 30 components" in results.read_text()
    capsys.readouterr()
    assert quality_mnist.main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "kept pca" in out and "PCA, 30 components: sse" not in out


def test_the_speed_reference_feeds_the_images_and_labels_as_torchvision_would():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10)
    x, y = next(iter(DataLoader(train_speed.PilDataset(images, labels), batch_size=10)))
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32  # ToTensor's layout: channels first
    torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 255, rtol=0, atol=0)
    assert y.tolist() == labels.tolist()


def test_a_model_cut_short_goes_on_from_its_checkpoint(tmp_path, digits):
    spec, settings = model_config("ae", digits.shape, code_dim=4, hidden=(32,)), TrainSettings(epochs=3, batch_size=100)

    def cut_after_the_first_epoch(record):
        raise KeyboardInterrupt  # as a time limit would

    torch.manual_seed(0)
    (tmp_path / "run").mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(
            build_model(spec),
            digits,
            settings,
            out=tmp_path / "run",
            device="cpu",
            progress=False,
            on_epoch_end=cut_after_the_first_epoch,
        )
    first_epoch = (tmp_path / "run" / "history.csv").read_text().splitlines()[1]
    resumed, seconds = fit(spec, digits, settings, torch.device("cpu"), 0, tmp_path / "run")
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 4 and history[1] == first_epoch  # the first epoch was kept, not trained again
    straight, _ = fit(spec, digits, settings, torch.device("cpu"), 0)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert seconds == pytest.approx(
        sum(float(line.split(",")[history[0].split(",").index("seconds")]) for line in history[1:])
    )


def test_each_training_checkpoints_in_a_folder_of_its_own_settings(tmp_path):
    quick = quality_mnist.MODES["quick"]
    folder = quality_mnist.run_folder(tmp_path, quick, 0, "vae")
    assert folder == quality_mnist.run_folder(tmp_path, quick, 0, "vae") and folder.parent == tmp_path
    others = {
        quality_mnist.run_folder(tmp_path, quick, 1, "vae"),
        quality_mnist.run_folder(tmp_path, quick, 0, "iwae"),
        quality_mnist.run_folder(tmp_path, dataclasses.replace(quick, vae_epochs=2), 0, "vae"),
    }
    assert folder not in others and len(others) == 3


# A rate-distortion curve: bytes at four PSNRs, as a codec's qualities give them.
PSNR = np.array([18.0, 22.0, 26.0, 31.0])
BYTES = np.array([120.0, 210.0, 400.0, 950.0])


def test_a_curve_at_half_the_bytes_everywhere_has_a_delta_rate_of_minus_50_percent():
    assert bd_rate(BYTES / 2, PSNR, BYTES, PSNR) == pytest.approx(-50)
    assert bd_rate(BYTES * 2, PSNR, BYTES, PSNR) == pytest.approx(100)
    assert bd_rate(BYTES, PSNR, BYTES, PSNR) == pytest.approx(0, abs=1e-9)
    # Over the overlap only: half the bytes on part of the reference's range is still -50% (on a curve whose log rate
    # is a line, which the interpolation of any of its points gives exactly).
    line = 10 * 2 ** (PSNR / 4)
    assert bd_rate(line[1:3] / 2, PSNR[1:3], line, PSNR) == pytest.approx(-50)
    assert overlap(line[1:3] / 2, PSNR[1:3], line, PSNR) == (22, 26)


def test_the_delta_rate_leaves_out_beaten_points_and_needs_an_overlap():
    # A setting that costs more for less (AVIF's lowest qualities, bits beyond what a code needs) changes nothing.
    beaten = bd_rate(np.append(BYTES / 2, 300), np.append(PSNR, 19), BYTES, PSNR)
    assert beaten == pytest.approx(-50)
    assert bd_rate(BYTES, PSNR + 20, BYTES, PSNR) is None
    assert bd_rate(BYTES[:1], PSNR[:1], BYTES, PSNR) is None


def test_the_bytes_at_a_psnr_follow_the_curve_and_stop_at_its_ends():
    assert rate_at(BYTES, PSNR, 22.0) == pytest.approx(210)
    assert 210 < rate_at(BYTES, PSNR, 24.0) < 400
    assert rate_at(BYTES, PSNR, 40.0) is None


def test_batched_ssim_equals_scikit_images_structural_similarity():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    for shape in ((3, 1, 28, 28), (2, 3, 40, 32)):
        clean = rng.random(shape)
        noisy = np.clip(clean + rng.normal(0, 0.1, shape), 0, 1)
        expected = np.mean(
            [
                metrics.structural_similarity(
                    a, b, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0
                )
                for a, b in zip(noisy, clean)
            ]
        )
        assert ssim(noisy, clean) == pytest.approx(expected, abs=1e-10)
    assert ssim(clean, clean) == pytest.approx(1)


def test_the_rd_ae_bytes_at_a_fixed_bit_error_are_interpolated_on_a_log_scale():
    from bench.rate_distortion import verdict

    rd = [
        {"method": "RD-AE", "sse_per_image": 9.0, "bytes_per_image": 4.0},
        {"method": "RD-AE", "sse_per_image": 6.0, "bytes_per_image": 16.0},
        {"method": "RD-AE, searched", "sse_per_image": 10.0, "bytes_per_image": 2.0},
        {"method": "RD-AE, searched", "sse_per_image": 5.0, "bytes_per_image": 8.0},
    ]
    fixed = [
        {"code": 16, "setting": "4 bits", "sse_per_image": 7.5, "bytes_per_image": 16.0},
        {"code": 32, "setting": "8 bits", "sse_per_image": 5.0, "bytes_per_image": 32.0},
        {"code": 8, "setting": "2 bits", "sse_per_image": 9.5, "bytes_per_image": 2.0},
    ]
    inside, edge, above, before_8, before_32 = verdict(rd, fixed).splitlines()
    # Halfway in the error is halfway on a log scale: sqrt(4 x 16) = 8 bytes; searched sqrt(2 x 8) = 4 at 7.5, and
    # 8 x (2 / 8)^(1 / 5) = 6.06 at 6.0.
    assert inside.endswith("RD-AE 8.00 (0.50); RD-AE, searched 4.00 (0.25).")
    assert edge.endswith("RD-AE outside its errors; RD-AE, searched 8.00 (0.25).")
    # Above a curve's errors its last point bounds the bytes: 4 bytes give an error of 9, below 9.5.
    assert above.endswith(
        "RD-AE at most 4.00 (2.00: those bytes give a lower error, 9.00); RD-AE, searched 2.30 (1.15)."
    )
    assert before_8.startswith("- the issue's fixed-bit AE (10 epochs), 8 bytes: 8.00 bytes at a squared error of 8.90")
    assert before_32.endswith("RD-AE 16.00 (0.50); RD-AE, searched 6.06 (0.19).")


# The photo restoration benchmark (bench/photos_restore.py): the conventions of the published tables.


def test_the_luminance_is_bt601_in_the_16_to_235_range():
    from bench.photos_restore import luma

    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255], [100, 150, 200]]])
    expected = [
        [16, 235, 16 + 65.481],
        [16 + 128.553, 16 + 24.966, 16 + (65.481 * 100 + 128.553 * 150 + 24.966 * 200) / 255],
    ]
    np.testing.assert_allclose(luma(rgb), expected, rtol=0, atol=1e-12)


def test_the_psnr_has_peak_255_and_leaves_out_the_border():
    from bench.photos_restore import psnr

    clean = np.zeros((10, 12))
    output = clean + 1.0
    output[:2], output[-2:], output[:, :2], output[:, -2:] = 100, 100, 100, 100  # errors on the border only
    assert psnr(output, clean, border=2) == pytest.approx(20 * np.log10(255))  # squared error 1 inside
    assert psnr(output, clean) < 30
    assert psnr(clean + 255, clean) == pytest.approx(0)


def test_the_low_resolution_input_is_the_image_cropped_to_a_multiple_of_the_factor_and_shrunk():
    from bench.photos_restore import low_resolution

    clean = np.full((11, 14), 100.0)
    cropped, low = low_resolution(clean, 3)
    assert cropped.shape == (9, 12) and low.shape == (3, 4)
    np.testing.assert_allclose(low, 100, atol=1e-4)  # Pillow's bicubic keeps a flat image flat, in floating point


def test_the_noise_is_seeded_by_set_image_and_sigma_and_not_clipped():
    from bench.photos_restore import noisy

    clean = np.zeros((64, 64))
    first = noisy(clean, "BSD68", "test001.png", 25)
    np.testing.assert_array_equal(first, noisy(clean, "BSD68", "test001.png", 25))
    for other in (noisy(clean, "BSD68", "test002.png", 25), noisy(clean, "Set12", "test001.png", 25)):
        assert not np.allclose(first, other)
    assert first.min() < 0 and first.std() == pytest.approx(25, rel=0.05)
    assert noisy(clean, "BSD68", "test001.png", 50).std() == pytest.approx(50, rel=0.05)


def test_every_method_gets_the_very_same_noisy_image():
    from bench.photos_restore import ImageRecords, measure, noisy

    seen = {"first": [], "second": []}

    def method(name):
        def run(image):
            seen[name].append(image.copy())
            return image

        return run, {}

    images = {"a.png": np.full((8, 8), 50.0), "b.png": np.full((8, 8), 200.0)}
    rows = measure("Set12", 25, images, {"first": method("first"), "second": method("second")}, {}, ImageRecords(None))
    for index, (name, clean) in enumerate(images.items()):
        np.testing.assert_array_equal(seen["first"][index], seen["second"][index])
        np.testing.assert_array_equal(seen["first"][index], noisy(clean, "Set12", name, 25))
    assert rows[0]["psnr"] == rows[1]["psnr"]


def test_the_json_holds_one_row_per_measured_figure_and_the_published_ones(tmp_path):
    from bench.photos_restore import save_json, section

    path = tmp_path / "results" / "photos_restore.json"
    bm3d = {"task": "denoise", "set": "BSD68", "sigma": 25, "method": "BM3D", "psnr": 28.6, "seconds_per_image": 9.8}
    bm3d["cpu_seconds_per_image"] = 15.2
    bicubic = {
        "task": "upscale",
        "set": "Set5",
        "factor": 2,
        "method": "bicubic",
        "psnr": 33.69,
        "seconds_per_image": 0.01,
    }
    save_json(path, [{**bm3d, "images": 68}, {**bicubic, "images": 5}])
    save_json(path, [{**bm3d, "psnr": 28.5, "images": 68}])  # a rerun of one part replaces its rows only
    rows = json.loads(path.read_text())
    measured = [r for r in rows if not r.get("published")]
    assert measured == [{**bm3d, "psnr": 28.5, "images": 68}, {**bicubic, "images": 5}]
    published = {(r["set"], r.get("sigma", r.get("factor")), r["method"]): r for r in rows if r.get("published")}
    assert published["BSD68", 25, "DnCNN-S"] == {
        "task": "denoise", "set": "BSD68", "sigma": 25, "method": "DnCNN-S", "psnr": 29.23, "published": True
    }  # fmt: skip
    assert published["Set5", 2, "SRCNN"]["psnr"] == 36.66 and len(published) == 9 + 18
    text = section(rows, "settings\n")
    assert "| BSD68 | 25 | 68 | 28.50 | 28.57 | 28.92 | 29.23 | 9.8 | 15.2 |" in text
    assert "| Set5 | 2 | 5 | 33.69 | 33.66 | 36.66 | 37.53 | 0.01 |" in text
    assert "Measured less published, dB: BM3D BSD68 sigma 25 -0.07." in text
    assert "Measured less published, dB: bicubic Set5 factor 2 +0.03." in text
    assert "BM3D took 17 min of CPU time for the rows measured here (11 min on the wall clock" in text
    assert "a run of every default level of BSD68 (15 25 50: 52 min) takes 52 min of CPU time." in text


def test_a_run_not_given_as_it_should_be_is_refused_in_one_line(tmp_path, capsys):
    from bench.photos_restore import main

    argv = ["--data-dir", str(tmp_path), "--results", str(tmp_path / "RESULTS.md")]
    for given, match in (
        (["--denoise-run", f"25={tmp_path / 'nowhere'}"], f"{tmp_path / 'nowhere'}: not a run folder"),
        (["--denoise-run", "runs/red"], "give a denoiser as SIGMAS=RUN"),
        (["--upscale-run", str(tmp_path / "nowhere")], "not a run folder"),
    ):
        assert main([*argv, *given]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err
    assert not (tmp_path / "RESULTS.md").exists() and not (tmp_path / "results").exists()


def test_a_run_of_a_model_that_cannot_restore_photos_is_refused_in_one_line(tmp_path, capsys):
    from bench.photos_restore import main

    run = Path(__file__).parent / "fixtures" / "artifacts-0.1.0" / "run-ae"  # an MLP auto-encoder's run
    assert main(["--data-dir", str(tmp_path), "--denoise-run", f"25={run}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"photos_restore: error: {run}: its model cannot restore photos (no restore()); train one with `--model red`"
    )


def test_bm3d_denoises_the_very_same_noisy_image():
    bm3d = pytest.importorskip("bm3d")
    from bench.photos_restore import denoisers, noisy, psnr

    clean = np.add.outer(np.arange(16), np.arange(16)) * 8.0
    given = noisy(clean, "Set12", "ramp.png", 25)
    run, _ = denoisers("Set12", 25, {}, bm3d)["BM3D"]
    assert psnr(run(given), clean) > psnr(given, clean) + 5


class _Identity(torch.nn.Module):
    """A stand-in for a `red` model (the contract: restore, enlarge, factors) that changes nothing."""

    factors = (2,)

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.seen = []

    def restore(self, x):
        self.seen.append(x)
        return x

    def enlarge(self, low, factor):
        return self.restore(torch.nn.functional.interpolate(low, scale_factor=factor, mode="nearest"))


def test_aekit_rows_give_the_model_intensities_and_name_the_run(tmp_path):
    from bench.photos_restore import ImageRecords, Restorer, denoisers, measure, upscalers

    (tmp_path / "history.csv").write_text("epoch,seconds\n1,60.5\n2,59.5\n")
    restorer = Restorer(tmp_path, _Identity())
    images = {"a.png": 51.0 + np.arange(48.0).reshape(8, 6)}
    rows = measure(
        "Set12", 25, images, denoisers("Set12", 25, {("denoise", False, 25): restorer}, None), {}, ImageRecords(None)
    )
    noisy_row, aekit_row = rows
    assert aekit_row["method"] == "aekit red" and aekit_row["psnr"] == noisy_row["psnr"]  # the identity's output
    assert (aekit_row["run"], aekit_row["parameters"], aekit_row["train_seconds"]) == (str(tmp_path), 3, 120.0)
    given = restorer.model.seen[0]
    assert given.shape == (1, 1, 8, 6) and given.dtype == torch.float32
    assert abs(given.mean().item() - 75 / 255) < 0.05  # the image's mean, 74.5, with noise
    rows = measure(
        "Set5", 2, images, upscalers("Set5", 2, {("upscale", False, 0): restorer}, None), {}, ImageRecords(None)
    )
    assert [r["method"] for r in rows] == ["bicubic", "aekit red"] and restorer.model.seen[1].shape == (1, 1, 8, 6)
    assert "aekit red" not in upscalers("Set5", 3, {("upscale", False, 0): restorer}, None)  # not one of its factors


def test_a_blind_denoiser_and_one_of_its_sigma_are_two_rows_saying_what_each_learnt(tmp_path):
    from bench.photos_restore import Restorer, denoisers

    options = {"restore": "denoise", "width": 8, "levels": 1, "blocks": 1, "patch": 40, "epochs": 2}  # resumed to 3
    options |= {"patches_per_epoch": 100, "dataset": "/data/train400", "batch_size": 16, "lr": 0.001}
    options |= {"schedule": "cosine", "factors": [2]}
    runs = {}
    for name, sigma in (("at-25", (25,)), ("blind", (0, 55))):
        run = tmp_path / name
        run.mkdir()
        (run / "history.csv").write_text("epoch,seconds\n1,6\n2,6\n3,6\n")
        (run / "config.json").write_text(json.dumps({"options": options | {"sigma": list(sigma)}}))
        model = _Identity()
        model.task, model.sigma = "denoise", sigma
        runs["denoise", False, 25, name] = Restorer(run, model)
    methods = denoisers("Set12", 25, runs, None)
    assert list(methods) == ["noisy input", "aekit red", "aekit red blind 0-55"]
    assert methods["aekit red blind 0-55"][1]["training"] == (
        "denoise sigma 0-55; width 8, levels 1, blocks 1; 300 patches of 40x40 from train400 (3 epochs), batch 16, "
        "lr 0.001 cosine"
    )
    assert "aekit red" not in denoisers("Set12", 15, runs, None)


def test_a_baseline_measured_before_is_not_measured_again(tmp_path):
    from bench.photos_restore import ImageRecords, measure

    calls = []

    def slow(image):
        calls.append(image)
        return image * 0.5

    images = {"a.png": np.full((8, 8), 50.0), "b.png": np.full((8, 8), 200.0)}
    path = tmp_path / "images.jsonl"
    first = measure("Set12", 50, images, {"BM3D": (slow, {})}, {}, ImageRecords(path))
    assert len(calls) == 2 and len(path.read_text().splitlines()) == 2
    again = measure("Set12", 50, images, {"BM3D": (slow, {})}, {}, ImageRecords(path))  # as a rerun would
    assert len(calls) == 2 and again == first
    measure("Set12", 25, images, {"BM3D": (slow, {})}, {}, ImageRecords(path))  # another level is measured
    assert len(calls) == 4
