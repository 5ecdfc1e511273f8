"""Embedding Projector export and TensorBoard logging, checked through a real TensorBoard server's HTTP API."""

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from helpers import assert_refused, run_cli
from PIL import Image
from safetensors.torch import load_file

import aekit
from aekit.cli import main
from aekit.report import projector

SMALL = ["--epochs", "2", "--no-progress", "--hidden", "32", "--code-dim", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small trained run on digits (VAE, 3-D code), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("projector") / "run"
    assert main(["train", "--model", "vae", "--out", str(out), *SMALL]) == 0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir, tmp_path):
    """A TensorBoard server on 127.0.0.1 for ``logdir``; yields get(path) -> bytes. Always stopped afterwards."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install aekit[tb])")
    port = _free_port()
    log = open(tmp_path / "tensorboard.log", "wb")
    # --load_fast=false: the pure-Python loader, so there is no data-server child process to clean up.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
        ],
        stdout=log,
        stderr=log,
    )

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.read()

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                get("/data/plugins_listing")
                break
            except (urllib.error.URLError, ConnectionError) as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (tmp_path / "tensorboard.log").read_text()
                    raise AssertionError("tensorboard did not start: " + log) from error
                time.sleep(0.3)
        yield get
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _projector_info(get) -> dict:
    """The projector plugin's view of run '.' (the logdir itself), asking again while it scans the folder."""
    for _ in range(50):
        if json.loads(get("/data/plugin/projector/runs")) == ["."]:
            break
        time.sleep(0.2)
    assert json.loads(get("/data/plugin/projector/runs")) == ["."]
    return json.loads(get("/data/plugin/projector/info?run=."))


def test_export_writes_codes_labels_sprite_and_config(capsys, run, tmp_path):
    out = tmp_path / "export"
    status, _, err = run_cli(capsys, "export-projector", str(run), "--max-points", "50", "--out", str(out))
    assert status == 0 and str(out) in err
    digits = aekit.load_dataset("digits")
    expected = aekit.load(run).encode(digits.x_test[:50])
    tensors = np.loadtxt(out / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (50, 3)
    np.testing.assert_allclose(tensors, expected, rtol=1e-5, atol=1e-6)
    metadata = (out / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "label\tindex"
    assert metadata[1:] == [f"{label}\t{i}" for i, label in enumerate(digits.y_test[:50])]
    sprite = np.asarray(Image.open(out / "sprite.png"))
    assert sprite.shape == (8 * 8, 8 * 8)  # ceil(sqrt(50)) = 8 thumbnails of 8x8 to a side
    np.testing.assert_array_equal(sprite[:8, 8:16], np.round(digits.x_test[1, 0] * 255))  # row by row
    config = (out / "projector_config.pbtxt").read_text()
    for line in (
        'tensor_path: "tensors.tsv"',
        'metadata_path: "metadata.tsv"',
        'image_path: "sprite.png"',
        "single_image_dim: 8",
        "tensor_shape: 50\n  tensor_shape: 3",
    ):
        assert line in config


@pytest.mark.slow
def test_projector_plugin_serves_the_export(capsys, run, tmp_path):
    out = tmp_path / "export"
    assert (
        run_cli(capsys, "export-projector", str(run), "--split", "train", "--max-points", "40", "--out", str(out))[0]
        == 0
    )
    with tensorboard(out, tmp_path) as get:
        [embedding] = _projector_info(get)["embeddings"]
        assert embedding["tensorShape"] == [40, 3]
        assert embedding["metadataPath"] == "metadata.tsv"
        assert embedding["sprite"] == {"imagePath": "sprite.png", "singleImageDim": [8, 8]}
        name = embedding["tensorName"]
        metadata = get(f"/data/plugin/projector/metadata?run=.&name={name}").decode().splitlines()
        tensor = np.frombuffer(get(f"/data/plugin/projector/tensor?run=.&name={name}"), dtype=np.float32)
        sprite = Image.open(io.BytesIO(get(f"/data/plugin/projector/sprite_image?run=.&name={name}")))
    digits = aekit.load_dataset("digits")
    assert metadata[0] == "label\tindex" and len(metadata) == 41
    assert [int(line.split("\t")[0]) for line in metadata[1:]] == list(digits.y_train[:40])
    np.testing.assert_allclose(tensor.reshape(40, 3), aekit.load(run).encode(digits.x_train[:40]), rtol=1e-5, atol=1e-6)
    assert sprite.size == (7 * 8, 7 * 8)


@pytest.mark.slow
def test_tensorboard_shows_scalars_images_and_the_embedding_without_changing_training(capsys, run, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--model", "vae", "--out", str(out), *SMALL, "--tensorboard")[0] == 0
    # Logging reads the model each epoch but must not disturb training: same weights as the run without it.
    for name, value in load_file(out / "model.safetensors").items():
        assert torch.equal(value, load_file(run / "model.safetensors")[name]), name
    history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    train_loss = [float(row[history[0].index("train_loss")]) for row in history[1:]]
    with tensorboard(out / "tensorboard", tmp_path) as get:
        [embedding] = _projector_info(get)["embeddings"]
        scalars = json.loads(get("/data/plugin/scalars/tags"))["."]
        images = json.loads(get("/data/plugin/images/tags"))["."]
        logged = json.loads(get("/data/plugin/scalars/scalars?run=.&tag=loss/train"))
    assert embedding["tensorShape"] == [len(aekit.load_dataset("digits").x_test), 3]
    assert embedding["sprite"]["singleImageDim"] == [8, 8]
    assert {"loss/train", "loss/test", "reconstruction/train", "time/seconds"} <= set(scalars)
    assert set(images) == {"reconstructions", "samples"}
    assert [step for _, step, _ in logged] == [1, 2]
    assert [value for _, _, value in logged] == pytest.approx(train_loss, rel=1e-5)


def test_missing_tensorboard_is_one_clear_line_and_nothing_written(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    out = tmp_path / "run"
    assert_refused(capsys, out, "train", "--out", str(out), *SMALL, "--tensorboard", match="pip install aekit[tb]")
    assert not out.exists()


def test_export_refuses_bad_requests(capsys, run, tmp_path):
    out = tmp_path / "export"
    assert_refused(
        capsys, out, "export-projector", str(run), "--max-points", "0", "--out", str(out), match="--max-points"
    )
    assert_refused(
        capsys, out, "export-projector", str(tmp_path / "nothing"), "--out", str(out), match="not a run folder"
    )
    assert not out.exists()


def test_colour_non_square_images_without_labels_and_a_shrunk_sprite(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 3, 6, 10)).astype(np.float32)  # RGB, 6 high and 10 wide
    projector.write_projector(tmp_path, rng.normal(size=(5, 2)), None, images)
    assert (tmp_path / "metadata.tsv").read_text().splitlines() == ["0", "1", "2", "3", "4"]  # one column, no header
    sprite = np.asarray(Image.open(tmp_path / "sprite.png"))
    assert sprite.shape == (3 * 6, 3 * 10, 3)  # a full 3 x 3 square, though 5 images fill 2 rows
    np.testing.assert_array_equal(sprite[6:12, :10], np.round(images[3].transpose(1, 2, 0) * 255))
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.index("single_image_dim: 10") < config.index("single_image_dim: 6")  # width, then height
    # A sprite over the projector's size limit gets smaller thumbnails rather than being refused.
    monkeypatch.setattr(projector, "MAX_SPRITE_SIDE", 15)
    width, height = projector.write_sprite(tmp_path / "small.png", images)
    assert (width, height) == (5, 3)
    assert Image.open(tmp_path / "small.png").size == (3 * 5, 3 * 3)
    # Vectors have no pictures: no sprite, and none left over from before.
    projector.write_projector(tmp_path, rng.normal(size=(5, 2)), np.arange(5))
    assert not (tmp_path / "sprite.png").exists() and "sprite" not in (tmp_path / "projector_config.pbtxt").read_text()


def test_help_documents_the_new_options(capsys):
    for argv in (["export-projector", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    shown = capsys.readouterr().out
    for option in ("--split", "--max-points", "--out", "--tensorboard", "aekit[tb]"):
        assert option in shown
