import argparse
import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import MNIST_DIR, needs_mnist
from helpers import assert_refused, run_cli

import aekit
from aekit.training import run_folder

FAST = ["--epochs", "1", "--no-progress", "--hidden", "32", "--code-dim", "4"]


@pytest.mark.slow
def test_help_documents_every_command():
    for command in ([], ["train"], ["evaluate"], ["demo"]):
        result = subprocess.run([sys.executable, "-m", "aekit", *command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: aekit" in result.stdout
    train_help = subprocess.run(
        [sys.executable, "-m", "aekit", "train", "--help"], capture_output=True, text=True
    ).stdout
    for option in (
        "--model",
        "--dataset",
        "--code-dim",
        "--epochs",
        "--out",
        "--resume",
        "--loss",
        "--noise",
        "--prior",
        "--beta",
        "--device",
        "--data-dir",
    ):
        assert option in train_help


def test_every_command_attaches_its_runner():
    """Each builder in aekit.cli.COMMANDS adds its command with the runner beside it, which main calls."""
    from aekit.cli import build_parser

    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    without = [name for name, parser in commands.choices.items() if not callable(parser.get_default("runner"))]
    assert len(commands.choices) == 12 and not without, f"commands without a runner: {without}"


def test_train_then_evaluate_writes_the_run_folder(capsys, tmp_path):
    out = tmp_path / "run"
    status, stdout, _ = run_cli(capsys, "train", "--model", "vae", "--out", str(out), *FAST)
    assert status == 0
    for name in (
        "config.json",
        "model.safetensors",
        "checkpoint.pt",
        "history.csv",
        "metrics.json",
        "figures/reconstructions.png",
        "figures/samples.png",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp"))  # no temporary files left behind
    trained = json.loads(stdout)
    status, stdout, _ = run_cli(capsys, "evaluate", str(out))
    assert status == 0
    evaluated = json.loads(stdout)
    assert evaluated["sse_per_example"] == pytest.approx(trained["sse_per_example"], rel=1e-6)
    assert json.loads((out / "metrics.json").read_text()) == evaluated
    model = aekit.load(out)
    assert model.reconstruct(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 1, 8, 8)


def test_resume_continues_to_more_epochs_and_refuses_changed_settings(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--model", "ae", "--out", str(out), *FAST)[0] == 0
    status, _, _ = run_cli(capsys, "train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress")
    assert status == 0
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2
    assert_refused(
        capsys, out, "train", "--resume", "--out", str(out), "--code-dim", "5", "--epochs", "3", match="code_dim"
    )
    # A run compiled before may resume another way: the capture named now replaces the saved one (and on this CPU
    # --cuda-graph is refused for the device, not for clashing with the saved --compile).
    config = json.loads((out / "config.json").read_text())
    config["options"]["compile"] = True
    (out / "config.json").write_text(json.dumps(config))
    assert_refused(
        capsys,
        out,
        "train",
        "--resume",
        "--out",
        str(out),
        "--cuda-graph",
        "--epochs",
        "3",
        match="needs one process on a CUDA device",
    )
    assert_refused(capsys, out, "train", "--model", "ae", "--out", str(out), *FAST, match="already holds a run")


@pytest.mark.slow
def test_a_real_process_exits_2_on_a_user_mistake(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "aekit", "train", "--dataset", "nope", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown dataset 'nope'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_names_and_options_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert_refused(capsys, out, "train", "--model", "gan", "--out", str(out), match="invalid choice: 'gan'")
    assert_refused(capsys, out, "train", "--dataset", "imagenet", "--out", str(out), match="unknown dataset")
    assert_refused(
        capsys, out, "train", "--dataset", str(tmp_path / "missing.npy"), "--out", str(out), match="missing.npy"
    )
    assert_refused(capsys, out, "train", "--hidden", "12,x", "--out", str(out), match="comma-separated")
    assert_refused(capsys, out, "train", "--lr", "-1", "--out", str(out), match="--lr -1.0 must be a positive number")
    assert_refused(capsys, out, "train", "--resume", "--out", str(out), match="not a run folder")
    assert_refused(capsys, out, "evaluate", str(out), match="not a run folder")


def test_train_never_writes_into_its_data(capsys, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(images / f"{i}.png")
    np.save(tmp_path / "x.npy", np.zeros((20, 8), np.float32))
    for data, out, match in [
        (images, images, "is, or holds,"),
        (images, images / "run", "lies in"),  # its figures would be images of the folder
        (tmp_path / "x.npy", tmp_path, "is, or holds,"),
    ]:
        argv = ["train", "--dataset", str(data), "--out", str(out), *FAST]
        assert_refused(capsys, tmp_path, *argv, match=f"{out} {match} {data}, which this command reads")
    assert sorted(p.name for p in images.iterdir()) == [f"{i}.png" for i in range(4)]


def test_nan_values_and_bce_outside_the_unit_interval_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    with_nan = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    with_nan[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    assert_refused(
        capsys, out, "train", "--dataset", str(tmp_path / "nan.npy"), "--out", str(out), match="NaN or infinite"
    )
    wide = np.random.default_rng(0).uniform(-1, 3, size=(50, 6))
    np.savetxt(tmp_path / "wide.csv", wide, delimiter=",")
    assert_refused(
        capsys,
        out,
        "train",
        "--dataset",
        str(tmp_path / "wide.csv"),
        "--loss",
        "bce",
        "--out",
        str(out),
        match="[0, 1]",
    )
    status, _, _ = run_cli(capsys, "train", "--dataset", str(tmp_path / "wide.csv"), "--out", str(out), *FAST)
    assert status == 0
    assert json.loads((out / "config.json").read_text())["model"]["likelihood"] == "gaussian"


def test_truncated_array_file_is_refused(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) // 2])
    out = tmp_path / "run"
    assert_refused(capsys, out, "train", "--dataset", str(tmp_path / "x.npy"), "--out", str(out), match="x.npy")


@needs_mnist
@pytest.mark.parametrize("damage", ["missing", "truncated", "tampered"])
def test_damaged_mnist_files_are_refused(capsys, tmp_path, damage):
    data_dir = tmp_path / "mnist"
    shutil.copytree(MNIST_DIR, data_dir)
    victim = data_dir / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(victim.read_bytes())
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(gzip.compress(raw[:-100]))
    else:
        victim.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    out = tmp_path / "run"
    assert_refused(
        capsys,
        out,
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        match="train-labels-idx1-ubyte",
    )


def test_weights_that_do_not_match_the_config_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--model", "ae", "--out", str(out), *FAST)[0] == 0
    config = json.loads((out / "config.json").read_text())
    config["model"]["code_dim"] = 5
    (out / "config.json").write_text(json.dumps(config))
    assert_refused(capsys, out, "evaluate", str(out), match="does not match")
    with pytest.raises(aekit.RunError, match="does not match"):
        aekit.load(out)


def test_a_corrupt_checkpoint_or_weights_file_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--model", "ae", "--out", str(out), *FAST)[0] == 0
    (out / run_folder.CHECKPOINT).write_bytes(b"not a checkpoint at all")
    assert_refused(capsys, out, "train", "--resume", "--out", str(out), "--epochs", "2", match="corrupt")
    (out / run_folder.WEIGHTS).write_bytes(b"\x00" * 40)
    assert_refused(capsys, out, "evaluate", str(out), match="corrupt")


@pytest.mark.slow
def test_building_the_parser_loads_no_figures_no_scikit_learn_and_no_workflow():
    code = (
        "import sys; from aekit.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('matplotlib', 'sklearn', 'aekit.jobs.workflow', 'aekit.report.figures', "
        "'aekit.uses.compress', 'aekit.uses.export', 'onnxruntime') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"the parser loaded {loaded}"
