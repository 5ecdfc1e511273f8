"""ONNX export (aekit.uses.export, `aekit export`): every family and net, grey and colour, odd sizes; parity with
PyTorch; a run folder that loads anywhere; and the refusals, one line, nothing written."""

import errno
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_refused, run_cli

import aekit
from aekit.data import Dataset
from aekit.errors import AekitError, DataError
from aekit.models import build_model, model_config
from aekit.training.trainer import TrainSettings, train
from aekit.uses import export as onnx_export

ort = pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (pip install aekit[export])")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _images(shape, n=80, seed=0):
    """A tiny image dataset of ``shape`` (random intensities), for colour and odd sizes."""
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
    return Dataset("images", x[: n - 16], x[n - 16 :], None, None, binary=False)


def _table(n=120, seed=0):
    """Real values whose columns differ by orders of magnitude: a model that standardizes."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 2)) @ rng.normal(size=(2, 6)) * np.logspace(-2, 3, 6) + 50).astype(np.float32)
    return Dataset("table", x[:96], x[96:], None, None, binary=False)


def _model(family, data, **fields):
    """A small model of ``family`` trained one epoch on ``data`` (PCA: fitted)."""
    torch.manual_seed(0)
    model = build_model(model_config(family, data.shape, **fields))
    train(model, data, TrainSettings(epochs=1, batch_size=32, seed=0), device="cpu", progress=False)
    return model.eval()


SMALL = {"hidden": (16, 8), "code_dim": 4}
CASES = {
    **{f"{family}-mlp-grey": (family, "digits", SMALL) for family in ("ae", "dae", "dropout-ae", "aae", "vae")},
    "vqvae-mlp-grey": ("vqvae", "digits", {**SMALL, "codebook_size": 16}),
    "rd-ae-mlp-grey": ("rd-ae", "digits", SMALL),
    "pca-grey": ("pca", "digits", {"code_dim": 4}),
    "pca-standardized-table": ("pca", "table", {"code_dim": 2, "likelihood": "gaussian", "standardize": True}),
    "ae-standardized-table": ("ae", "table", {**SMALL, "likelihood": "gaussian", "standardize": True}),
    "ae-conv-colour-odd": ("ae", "colour", {"hidden": (4, 8), "code_dim": 4, "net": "conv", "likelihood": "gaussian"}),
    # dae's and aae's conv graphs are ae's (they differ in training only); dropout-ae's hold its dropout layers.
    "vae-conv-grey": ("vae", "digits", {"hidden": (4, 8), "code_dim": 4, "net": "conv"}),
    "dropout-ae-conv-colour-odd": (
        "dropout-ae",
        "colour",
        {"hidden": (4, 8), "code_dim": 4, "net": "conv", "likelihood": "gaussian"},
    ),
    "vqvae-conv-colour-odd": (
        "vqvae",
        "colour",
        {"hidden": (4, 8), "code_dim": 4, "net": "conv", "codebook_size": 16, "likelihood": "gaussian"},
    ),
    "rd-ae-conv-upscale-grey": ("rd-ae", "digits", {"hidden": (4,), "code_dim": 4, "net": "conv", "task": "upscale"}),
}


@pytest.fixture(scope="module")
def datasets(digits):
    return {"digits": digits, "colour": _images((3, 9, 7)), "table": _table()}


@pytest.mark.parametrize("case", CASES)
def test_every_family_exports_and_onnxruntime_gives_what_pytorch_gives(tmp_path, datasets, case):
    family, data_name, fields = CASES[case]
    data = datasets[data_name]
    model = _model(family, data, **fields)
    manifest = onnx_export.export(model, tmp_path / "onnx", data.x_test)
    written = json.loads((tmp_path / "onnx" / onnx_export.MANIFEST).read_text())
    assert written == manifest and manifest["aekit_version"] == aekit.__version__
    assert manifest["parity"]["checks"][0]["inputs"].startswith("the first 64 examples given")
    assert all(v <= onnx_export.TOLERANCE for c in manifest["parity"]["checks"] for v in c["encoder"].values())
    # A batch of another size than the one traced, in the data's own units: the standardization is in the graphs.
    x = data.x_test[:5]
    codes = _session(tmp_path / "onnx" / onnx_export.ENCODER).run(None, {"x": x})
    if model.variational:
        with torch.no_grad():
            log_variance = model.posterior(model.standardize(torch.from_numpy(x)))[1].numpy()
        np.testing.assert_allclose(codes[1], log_variance, rtol=1e-5, atol=1e-5 * np.abs(log_variance).max())
        assert [o["name"] for o in manifest["encoder"]["outputs"]] == ["mean", "log_variance"]
    np.testing.assert_allclose(codes[0], model.encode(x), rtol=1e-5, atol=1e-5 * np.abs(codes[0]).max())
    decoded = _session(tmp_path / "onnx" / onnx_export.DECODER).run(None, {"code": codes[0]})[0]
    expected = model.decode(codes[0])
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert manifest["encoder"]["inputs"][0]["shape"] == ["batch", *data.shape]
    assert manifest["standardized_inside"] == fields.get("standardize", False)
    assert manifest["value_range"] == (None if data_name == "table" else [0.0, 1.0])


# Colour at an odd size, and grey at multiples of 4 (traced with no padding, the graph must still pad other sizes).
@pytest.mark.parametrize("shape", [(3, 13, 11), (1, 12, 8)])
def test_a_fully_convolutional_run_exports_for_any_batch_height_and_width(tmp_path, shape):
    data = _images(shape)
    model = _model("rd-ae", data, hidden=(4, 8), code_dim=4, net="fully-conv", likelihood="gaussian")
    manifest = onnx_export.export(model, tmp_path / "onnx")
    other = [shape[0], shape[1] + onnx_export.OTHER_SIZE[0], shape[2] + onnx_export.OTHER_SIZE[1]]
    assert [c["size"] for c in manifest["parity"]["checks"]] == [list(shape), other]
    assert manifest["parity"]["checks"][0]["inputs"] == "seeded random inputs in the data's range"
    assert manifest["encoder"]["inputs"][0]["shape"] == ["batch", shape[0], "height", "width"]
    encoder, decoder = (_session(tmp_path / "onnx" / name) for name in (onnx_export.ENCODER, onnx_export.DECODER))
    for height, width in ((13, 11), (16, 16), (5, 9), (21, 30)):
        x = np.random.default_rng(height).random((3, shape[0], height, width), dtype=np.float32)
        code = encoder.run(None, {"x": x})[0]
        assert np.array_equal(code, model.map_symbols(torch.from_numpy(x)).numpy())
        image = decoder.run(None, {"code": code})[0][..., :height, :width]
        np.testing.assert_allclose(image, model.restore(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_the_python_export_leaves_the_model_as_it_was_and_refuses_examples_of_another_size(tmp_path, digits):
    model = _model("pca", digits, code_dim=4).train()
    with pytest.raises(DataError, match="examples of shape"):
        onnx_export.export(model, tmp_path / "onnx", digits.x_test[:, :, :4])
    manifest = onnx_export.export(model, tmp_path / "onnx", (digits.x_test * 255).astype(np.uint8))
    assert model.training and manifest["model"] == "pca"
    assert manifest["parity"]["checks"][0]["decoder"]["x"] <= onnx_export.TOLERANCE


def test_a_restoration_model_exports_its_restorer_for_any_height_and_width(tmp_path):
    model = _model("red", _images((3, 12, 10)), width=4, levels=2, blocks=1)
    manifest = onnx_export.export(model, tmp_path / "onnx")
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["export.json", "restorer.onnx"]
    assert manifest["restorer"]["outputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert 0 < onnx_export.largest_difference(manifest) <= onnx_export.TOLERANCE
    restorer = _session(tmp_path / "onnx" / onnx_export.RESTORER)
    for height, width in ((12, 10), (4, 7), (17, 33)):
        x = np.random.default_rng(height).random((2, 3, height, width), dtype=np.float32)
        with torch.no_grad():
            expected = model.restore(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(restorer.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_a_model_with_neither_codes_nor_restoration_is_refused(tmp_path):
    model = build_model(model_config("red", (1, 8, 8), width=4, levels=1, blocks=1)).eval()
    model.takes_any_size = False  # a restoration model of one size only, which no family is yet
    with pytest.raises(AekitError, match="nor restores images"):
        onnx_export.export(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run (ae on a .npy table of intensities) and the .npy file it was trained on."""
    folder = tmp_path_factory.mktemp("export")
    data = folder / "data.npy"
    np.save(data, np.random.default_rng(0).random((60, 1, 6, 5), dtype=np.float32))
    status = aekit.cli.main(
        ["train", "--dataset", str(data), "--epochs", "1", "--hidden", "8", "--code-dim", "3", "--no-progress"]
        + ["--out", str(folder / "run")]
    )
    assert status == 0
    return folder / "run", data


def test_aekit_export_checks_the_run_on_its_test_split(tmp_path, capsys, run):
    status, _, err = run_cli(capsys, "export", str(run[0]), "--format", "onnx", "--out", str(tmp_path / "onnx"))
    assert status == 0, err
    manifest = json.loads((tmp_path / "onnx" / onnx_export.MANIFEST).read_text())
    check = manifest["parity"]["checks"][0]
    assert check["inputs"] == "the first 64 examples of the run's test split" and check["count"] == 12
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["decoder.onnx", "encoder.onnx", "export.json"]


def test_a_copied_renamed_read_only_run_without_its_data_loads_and_exports(tmp_path, capsys, run):
    run_dir, data = run
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(run_dir, moved)
    hidden = data.rename(data.with_name("away.npy"))  # the data the run was trained on is not on this machine
    for path in [moved, *moved.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        model = aekit.load(moved)
        x = np.load(hidden)[:4]
        assert np.array_equal(model.reconstruct(x), aekit.load(run_dir).reconstruct(x))
        status, _, err = run_cli(capsys, "export", str(moved), "--out", str(tmp_path / "onnx"))
        assert status == 0, err
        manifest = json.loads((tmp_path / "onnx" / onnx_export.MANIFEST).read_text())
        assert manifest["parity"]["checks"][0]["inputs"] == "seeded random inputs in the data's range"
        assert sorted(p.name for p in moved.iterdir()) == sorted(p.name for p in run_dir.iterdir())
    finally:
        hidden.rename(data)
        for path in [moved, *moved.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    return copy


def test_an_unfinished_run_is_refused(tmp_path, capsys, run):
    copy = _copy(run, tmp_path)
    (copy / "metrics.json").unlink()
    assert_refused(capsys, tmp_path, "export", str(copy), "--out", str(tmp_path / "onnx"), match="not a finished run")


def test_corrupt_weights_are_refused(tmp_path, capsys, run):
    copy = _copy(run, tmp_path)
    (copy / "model.safetensors").write_bytes(b"not safetensors")
    assert_refused(capsys, tmp_path, "export", str(copy), "--out", str(tmp_path / "onnx"), match="is corrupt")


def test_an_output_that_exists_or_is_a_file_or_lies_in_the_run_is_refused(tmp_path, capsys, run):
    (tmp_path / "there").mkdir()
    (tmp_path / "file").write_text("mine")
    for out, match in ((tmp_path / "there", "already exists"), (tmp_path / "file", "a file is in the way")):
        assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(out), match=match)
    assert_refused(capsys, run[0], "export", str(run[0]), "--out", str(run[0]), match="which this command reads")
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(tmp_path / "file" / "x"), match="is a file")


def test_a_full_disk_leaves_nothing(tmp_path, capsys, run, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(tmp_path / "onnx"), match="free space")
    assert list(tmp_path.iterdir()) == []


def test_graphs_that_differ_from_pytorch_are_not_written(tmp_path, capsys, run, monkeypatch):
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    out = tmp_path / "onnx"
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(out), match="differs from PyTorch's by")
    assert list(tmp_path.iterdir()) == []


def test_what_the_exporter_cannot_express_is_refused_in_one_line(tmp_path, capsys, run, monkeypatch):
    def cannot(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::mystery\nand a long story")

    monkeypatch.setattr(torch.onnx, "export", cannot)
    out = tmp_path / "onnx"
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(out), match="aten::mystery")


def test_a_graph_onnxruntime_cannot_run_is_refused_in_one_line(tmp_path, capsys, run, monkeypatch):
    real = ort.InferenceSession

    def failing(graph_bytes, *args, **kwargs):
        real(graph_bytes, *args, **kwargs)
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed\nmore")

    monkeypatch.setattr(ort, "InferenceSession", failing)
    out = tmp_path / "onnx"
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(out), match="onnxruntime cannot run")
    assert list(tmp_path.iterdir()) == []


def test_without_onnxruntime_the_export_says_how_to_install_it(tmp_path, capsys, run, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    out = tmp_path / "onnx"
    assert_refused(capsys, tmp_path, "export", str(run[0]), "--out", str(out), match="pip install aekit[export]")
