"""The speed paths give the same answers as the plain one: bf16 autocast, torch.compile, and data parallelism over
two processes (torchrun, gloo on CPU) against one process with the same global batch."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from aekit.models import ModelSpec, build_model
from aekit.trainer import TrainSettings, mean_loss, train


def _model(name, dataset):
    torch.manual_seed(0)
    return build_model(ModelSpec(name, dataset.shape, code_dim=8, hidden=(64, 32)))


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_bf16_losses_agree_with_fp32(name, digits):
    model = _model(name, digits)
    x = torch.from_numpy(digits.x_test)
    fp32 = mean_loss(model, x)["reconstruction"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = mean_loss(model, x)["reconstruction"]
    assert bf16 == pytest.approx(fp32, rel=0.02)
    assert bf16 != fp32  # autocast really ran in lower precision
    trained = {}
    for precision in ("fp32", "bf16"):
        model = _model(name, digits)
        history = train(model, digits, TrainSettings(epochs=3, batch_size=64, precision=precision), device="cpu",
                        progress=False)
        trained[precision] = history[-1]["test_reconstruction"]
    assert trained["bf16"] == pytest.approx(trained["fp32"], rel=0.05)


def test_compiled_step_trains_like_the_eager_one(digits):
    results = {}
    for compiled in (False, True):
        model = _model("ae", digits)
        history = train(model, digits, TrainSettings(epochs=2, batch_size=100, schedule="cosine", compile=compiled),
                        device="cpu", progress=False)
        results[compiled] = history[-1]["test_loss"]
    assert results[True] == pytest.approx(results[False], rel=1e-3)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = ["--model", "ae", "--epochs", "2", "--batch-size", "64", "--hidden", "64,32", "--code-dim", "8",
              "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "aekit", "train", "--out", str(tmp_path / "one"), *common],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "aekit", "train", "--out", str(tmp_path / "two"), *common],
                            capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4)  # a wrong shard differs by ~0.06
    # (The ragged last batch splits 15/14 over the ranks, so the two runs differ in the last few digits.)
    assert double.stdout.count('"sse_per_example"') == 1  # only rank 0 reports and writes


def test_a_vae_resumed_under_torchrun_draws_the_noise_of_an_uninterrupted_job(tmp_path):
    common = ["--model", "vae", "--batch-size", "64", "--hidden", "32", "--code-dim", "4", "--no-progress",
              "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def job(out, *extra):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "aekit", "train", "--out", str(tmp_path / out), *extra],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    job("straight", *common, "--epochs", "2")
    job("resumed", *common, "--epochs", "1")
    job("resumed", "--resume", "--epochs", "2", "--no-progress", "--device", "cpu")
    straight, resumed = (load_file(tmp_path / out / "model.safetensors") for out in ("straight", "resumed"))
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key  # each epoch's noise is seeded by epoch and rank
