"""The Kodak benchmark (bench/kodak.py, issue 30 item 5) on two tiny photos and a tiny hyperprior run: the points of
the JSON and how a rerun merges them, the published rows, the sign of the BD-rates, MS-SSIM, and CompressAI trained
alike where it imports."""

import json

import numpy as np
import pytest
import torch
from helpers import photo_folder, run_cli
from PIL import Image

from bench import kodak

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def run(tmp_path, capsys):
    """A hyperprior run of one epoch on 32 x 32 patches, N = M = 8."""
    photos = photo_folder(tmp_path / "train", sizes=[(40, 36), (48, 40), (36, 44)], colour=(0, 1, 2))
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--model", "hyperprior", "--loss", "mse", "--dataset", str(photos),
                             "--patch", "32", "--code-dim", "8", "--channels", "8", "--rate-lambda", "0.05",
                             "--epochs", "1", "--patches-per-epoch", "16", "--batch-size", "8",
                             "--out", str(out))  # fmt: skip
    assert status == 0, err
    return out


@pytest.fixture
def photos(tmp_path):
    """Two smooth 64 x 48 colour photos (random pixels would cost every codec the same)."""
    folder = tmp_path / "kodak"
    folder.mkdir()
    y, x = np.mgrid[:48, :64]
    for i in range(2):
        image = np.stack([x * 3 + i * 20, y * 4, (x + y) * 2], axis=-1) % 256
        Image.fromarray(image.astype(np.uint8)).save(folder / f"kodim0{i + 1}.png")
    return folder


def test_every_point_goes_to_the_json_with_the_published_rows_marked(run, photos, tmp_path, capsys):
    results = tmp_path / "out" / "RESULTS.md"
    assert kodak.main(["--kodak", str(photos), "--runs", str(run), "--results", str(results)]) == 0
    points = json.loads((results.parent / "results" / "kodak.json").read_text())
    assert all({"method", "setting", "bpp", "psnr", "ms_ssim"} <= p.keys() for p in points)
    published = [p for p in points if p.get("published")]
    assert len(published) == 10 and all(p["ms_ssim"] is None for p in published)
    assert {"method": "JPEG (Pillow), published by CompressAI", "setting": "point 3", "bpp": 0.508, "psnr": 29.04,
            "ms_ssim": None, "published": True} in published  # fmt: skip
    measured = [p for p in points if not p.get("published")]
    assert {p["method"] for p in measured} == {"JPEG", kodak.PLAIN_JPEG, "WebP", "AVIF", "aekit hyperprior, 1 epochs"}
    assert all(p["photos"] == 2 and p["encode_s"] > 0 and p["decode_s"] > 0 for p in measured)
    ours = next(p for p in measured if p["method"] == "aekit hyperprior, 1 epochs")
    assert ours["setting"] == "lambda 0.05" and ours["run"] == str(run)
    assert ours["training"].startswith("aekit train --model hyperprior --code-dim 8 --rate-lambda 0.05 --channels 8")
    assert ours["bpp_one_file"] < ours["bpp"]  # each photo its own file: two headers, where one file has one
    jpeg = sorted((p for p in measured if p["method"] == "JPEG"), key=lambda p: p["bpp"])
    assert jpeg[-1]["psnr"] > jpeg[0]["psnr"] + 10
    plain = {p["setting"]: p for p in measured if p["method"] == kodak.PLAIN_JPEG}
    # The same pixels in more bytes: Pillow's defaults do not optimize the Huffman tables.
    assert all(plain[p["setting"]]["psnr"] == p["psnr"] and plain[p["setting"]]["bpp"] > p["bpp"] for p in jpeg)
    text = results.read_text()
    assert text.startswith(kodak.HEADING) and "| bmshj2018-hyperprior, published | 3 | 0.131-0.669 |" in text
    assert (results.parent / "figures" / kodak.FIGURE_NAME).stat().st_size > 0
    # A second run of one part replaces its own points and keeps the others.
    assert kodak.main(["--kodak", str(photos), "--no-codecs", "--limit", "1", "--runs", str(run),
                       "--results", str(results)]) == 0  # fmt: skip
    again = json.loads((results.parent / "results" / "kodak.json").read_text())
    assert [p for p in again if p["method"] == "JPEG"] == [p for p in points if p["method"] == "JPEG"]
    assert [p["photos"] for p in again if p["method"] == "aekit hyperprior, 1 epochs"] == [1] and len(again) == len(
        points
    )


def test_a_folder_that_is_not_a_run_is_refused_in_one_line_before_anything_is_measured(photos, tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    for given in (["--runs", str(tmp_path / "nowhere")], ["--peers", str(tmp_path)]):
        assert kodak.main(["--kodak", str(photos), *given, "--results", str(results)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("kodak: error: ") and "Traceback" not in err
    assert not results.exists() and not (tmp_path / "results").exists()


def _curve(method, rates, values):
    return [{"method": method, "setting": f"q{i}", "bpp": r, "psnr": v, "ms_ssim": None} for i, (r, v) in
            enumerate(zip(rates, values))]  # fmt: skip


def test_the_bd_rate_of_a_cheaper_curve_is_negative_and_of_a_dearer_one_positive():
    rates, values = np.array([0.2, 0.4, 0.8, 1.6]), [26.0, 29.0, 32.0, 35.0]
    points = _curve("JPEG", rates, values) + _curve("half", rates / 2, values) + _curve("more", rates * 1.25, values)
    rows = {row["method"]: row for row in kodak.bd_rows(points)}
    assert rows["half"]["vs JPEG (PSNR)"] == "-50.0% over 26.00-35.00 dB"
    assert rows["more"]["vs JPEG (PSNR)"] == "+25.0% over 26.00-35.00 dB"
    assert rows["JPEG"]["vs JPEG (PSNR)"] == rows["half"]["vs JPEG (MS-SSIM)"] == rows["half"]["vs WebP (PSNR)"] == "-"


def test_aekit_is_set_against_compressai_trained_alike_only():
    rates, values = np.array([0.2, 0.4, 0.8]), [26.0, 29.0, 32.0]
    warmed = kodak.training_label(12, 256, 100.0)
    points = (
        _curve("aekit hyperprior, 12 epochs", rates, values)
        + _curve("aekit hyperprior, 24 epochs", rates / 2, values)
        + _curve(f"aekit hyperprior, {warmed}", rates / 4, values)
        + _curve("CompressAI hyperprior, 12 epochs (trained alike)", rates * 2, values)
        + _curve(f"CompressAI hyperprior, {warmed} (trained alike)", rates / 2, values)
    )
    assert kodak.alike_lines(points) == [
        "- aekit hyperprior, 12 epochs against CompressAI hyperprior, 12 epochs (trained alike): -50.0% over "
        "26.00-32.00 dB in PSNR, - in MS-SSIM.",
        "- aekit hyperprior, 12 epochs, 256 warm-up steps, clipped at 100 against CompressAI hyperprior, 12 epochs, "
        "256 warm-up steps, clipped at 100 (trained alike): -50.0% over 26.00-32.00 dB in PSNR, - in MS-SSIM.",
    ]


def test_ms_ssim_is_one_for_the_same_photo_and_none_below_its_five_scales():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (176, 192, 3), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    assert kodak.ms_ssim(clean, clean) == pytest.approx(1.0)
    assert 0 < kodak.ms_ssim(noisy, clean) < 0.99
    assert kodak.ms_ssim(clean[:160], clean[:160]) is None


def test_compressai_trained_alike_codes_each_photo_as_its_own_strings(run, photos, tmp_path):
    pytest.importorskip("compressai")
    peer = tmp_path / "peer"
    argv = ["train-peer", "--arch", "hyperprior", "--like", str(run), "--out", str(peer), "--max-steps", "2"]
    assert kodak.main(argv) == 0
    settings = json.loads((peer / kodak.PEER_FILE).read_text())
    assert (settings["N"], settings["M"], settings["rate_lambda"], settings["steps"]) == (8, 8, 0.05, 2)
    assert (settings["patch"], settings["batch_size"], settings["schedule"]) == (32, 8, "constant")
    assert kodak.main(argv) == 2  # its model is never written over
    point = kodak.peer_point(peer, kodak.read_photos(photos))
    assert point["method"] == "CompressAI hyperprior, 1 epochs (trained alike)" and point["setting"] == "lambda 0.05"
    assert point["bpp"] > 8 * kodak.SIZE_BYTES / (64 * 48) and point["psnr"] > 0


def test_the_peer_trains_on_the_run_s_very_crops_in_its_order(tmp_path, capsys, monkeypatch):
    from aekit.models.hyperprior import ScaleHyperprior

    seen, loss = [], ScaleHyperprior.loss

    def recording(model, x):
        if model.training:
            seen.append(x.detach().clone())
        return loss(model, x)

    monkeypatch.setattr(ScaleHyperprior, "loss", recording)
    photos = photo_folder(tmp_path / "train", sizes=[(40, 36), (48, 40), (36, 44)], colour=(0, 1, 2))
    status, _, err = run_cli(capsys, "train", "--model", "hyperprior", "--loss", "mse", "--dataset", str(photos),
                             "--patch", "16", "--code-dim", "4", "--channels", "4", "--epochs", "2", "--seed", "3",
                             "--patches-per-epoch", "12", "--batch-size", "5",
                             "--out", str(tmp_path / "run"))  # fmt: skip
    assert status == 0, err
    options, _, dataset = kodak.like_run(tmp_path / "run")
    steps, batches = kodak.run_crops(options, dataset)
    drawn = list(batches)
    assert steps == len(drawn) == len(seen) == 6 and [len(x) for x in drawn] == [5, 5, 2] * 2
    assert all(torch.equal(a, b) for a, b in zip(drawn, seen))
    assert not torch.equal(drawn[0], drawn[3])  # each epoch draws crops of its own
