"""The speed paths give the same answers as the plain one: bf16 autocast, torch.compile, CUDA graphs captured by
hand, and data parallelism over two processes (torchrun, gloo on CPU) against one process with the same global
batch."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch
from conftest import AEKIT_TRAIN, TORCHRUN_2
from safetensors.torch import load_file

from aekit.errors import AekitError
from aekit.models import build_model, model_config
from aekit.training.graphed import GraphedStep
from aekit.training.trainer import TrainSettings, mean_loss, train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; none here")


def _model(name, dataset):
    torch.manual_seed(0)
    return build_model(model_config(name, dataset.shape, code_dim=8, hidden=(64, 32)))


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
        history = train(
            model, digits, TrainSettings(epochs=3, batch_size=64, precision=precision), device="cpu", progress=False
        )
        trained[precision] = history[-1]["test_reconstruction"]
    assert trained["bf16"] == pytest.approx(trained["fp32"], rel=0.05)


@pytest.mark.slow  # torch.compile starts a C++ compiler
def test_compiled_step_trains_like_the_eager_one(digits):
    results = {}
    for compiled in (False, True):
        model = _model("ae", digits)
        history = train(
            model,
            digits,
            TrainSettings(epochs=2, batch_size=100, schedule="cosine", compile=compiled),
            device="cpu",
            progress=False,
        )
        results[compiled] = history[-1]["test_loss"]
    assert results[True] == pytest.approx(results[False], rel=1e-3)


@pytest.mark.slow  # torch.compile starts a C++ compiler (where its cache is cold)
def test_every_compiled_training_of_a_process_compiles(digits, monkeypatch):
    # Dynamo counts the compiled optimizer steps of finished trainings (their optimizers are gone) against its
    # recompile limit of 8, and past it would quietly run the step uncompiled: made to fail loudly here instead.
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    for seed in range(10):
        torch.manual_seed(seed)
        model = build_model(model_config("ae", digits.shape, code_dim=4, hidden=(16,)))
        history = train(
            model, digits, TrainSettings(epochs=1, batch_size=500, compile=True), device="cpu", progress=False
        )
        assert len(history) == 1


class _FakeGraphs:
    """Stands in for torch.cuda's graphs and streams on a CPU: capture records the step instead of running it, and
    each replay runs the recorded step on whatever the static batch holds then, as a real graph would."""

    def __init__(self, monkeypatch):
        self.capturing, self.captured = None, 0
        fakes = self

        class Graph:
            def replay(self):
                self.recorded()

        @contextlib.contextmanager
        def graph(g):
            fakes.capturing, fakes.captured = g, fakes.captured + 1
            yield
            fakes.capturing = None

        class Stream:
            def __init__(self, *args):
                pass

            def wait_stream(self, other):
                pass

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())


def test_graphed_step_runs_each_batch_once_warming_up_then_replaying_one_graph_per_shape(monkeypatch):
    fakes = _FakeGraphs(monkeypatch)
    seen = []

    def step(batch):
        out = {"loss": torch.zeros(())}

        def run():
            seen.append(batch.clone())
            out["loss"].copy_(batch.sum())

        if fakes.capturing is None:
            run()
        else:
            fakes.capturing.recorded = run
        return out

    graphed = GraphedStep(step, [], warmup=2)
    batches = [torch.full((4, 3), float(i)) if i % 3 else torch.full((2, 3), float(i)) for i in range(1, 13)]
    for batch in batches:
        assert graphed(batch)["loss"].item() == batch.sum().item()  # this batch's step, not a stale one
    assert [b[0, 0].item() for b in seen] == [b[0, 0].item() for b in batches]  # each exactly once, in order
    assert fakes.captured == 2 and set(graphed.graphs) == {torch.Size([4, 3]), torch.Size([2, 3])}


def test_cuda_graph_with_on_nan_skip_is_refused():
    with pytest.raises(AekitError, match="--on-nan stop"):
        TrainSettings(cuda_graph=True, on_nan="skip")


@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_on_a_cpu_is_refused_with_the_alternative(compiled, digits):
    with pytest.raises(AekitError, match="needs one process on a CUDA device.*--compile"):
        train(
            _model("ae", digits),
            digits,
            TrainSettings(epochs=1, cuda_graph=True, compile=compiled),
            device="cpu",
            progress=False,
        )


class _Interrupted(Exception):
    pass


def _stop_after(epoch):
    def check(record):
        if record["epoch"] == epoch:
            raise _Interrupted

    return check


@pytest.mark.slow  # torch.compile starts a C++ compiler (where its cache is cold)
def test_a_run_resumes_with_another_way_of_running_its_step(tmp_path, digits):
    # Eager, then compiled, then eager again: the optimizer state and learning rate carry over each change.
    settings = TrainSettings(epochs=3, batch_size=100, schedule="cosine")
    straight = train(_model("ae", digits), digits, settings, device="cpu", progress=False)
    (tmp_path / "mixed").mkdir()
    for epoch, compiled in ((1, False), (2, True)):
        with pytest.raises(_Interrupted):
            train(
                _model("ae", digits),
                digits,
                TrainSettings(**{**settings.to_dict(), "compile": compiled}),
                out=tmp_path / "mixed",
                device="cpu",
                resume=epoch > 1,
                progress=False,
                on_epoch_end=_stop_after(epoch),
            )
    mixed = train(
        _model("ae", digits), digits, settings, out=tmp_path / "mixed", device="cpu", resume=True, progress=False
    )
    assert len(mixed) == 3
    assert mixed[-1]["test_loss"] == pytest.approx(straight[-1]["test_loss"], rel=1e-3)


@pytest.mark.slow  # torch.compile starts a C++ compiler (where its cache is cold)
def test_a_cosine_run_resumed_with_more_epochs_follows_the_longer_schedule(tmp_path, digits):
    # Its learning rate had reached 0 at the end of the first run; it restarts from the longer schedule's rate.
    # (Compiled, a step at the saved rate of exactly 0 made every weight NaN.)
    first = train(
        _model("ae", digits),
        digits,
        TrainSettings(epochs=1, batch_size=100, schedule="cosine"),
        out=tmp_path,
        device="cpu",
        progress=False,
    )
    longer = train(
        _model("ae", digits),
        digits,
        TrainSettings(epochs=2, batch_size=100, schedule="cosine", compile=True),
        out=tmp_path,
        device="cpu",
        resume=True,
        progress=False,
    )
    assert longer[0] == first[0] and longer[-1]["test_loss"] < 0.995 * first[0]["test_loss"]


# How each captured step is checked on CUDA: by hand for every model kind, and with torch.compile for the adversarial
# auto-encoder, whose three phases (three optimizers) are the hardest to capture.
CAPTURED = [
    ("ae", {"cuda_graph": True}, 1e-3),
    ("vae", {"cuda_graph": True}, 0.1),  # the VAE and AAE draw noise
    ("aae", {"cuda_graph": True}, 0.1),
    ("aae", {"compile": True}, 0.1),
    ("aae", {"compile": True, "cuda_graph": True}, 0.1),
]


@needs_cuda
@pytest.mark.parametrize("name, capture, tolerance", CAPTURED)
def test_captured_step_trains_like_the_eager_one(name, capture, tolerance, digits):
    # 5 epochs of 15 steps: the full batch is captured in epoch 1, the ragged last one (38 examples) in epoch 4
    # (by hand after 3 eager warm-up steps of each shape, 5 when compiled).
    results = {}
    for how in ({}, capture):
        model = _model(name, digits)
        history = train(
            model,
            digits,
            TrainSettings(epochs=5, batch_size=100, schedule="cosine", **how),
            device="cuda",
            progress=False,
        )
        results[bool(how)] = history[-1]["test_reconstruction"]
        assert history[-1]["test_reconstruction"] < 0.9 * history[0]["test_reconstruction"]  # it learns
    assert results[True] == pytest.approx(results[False], rel=tolerance)


@needs_cuda
@pytest.mark.parametrize("first", [{"cuda_graph": True}, {}], ids=["captured", "eager"])
def test_cuda_graph_run_resumes_like_an_uninterrupted_one(first, tmp_path, digits):
    settings = TrainSettings(epochs=5, batch_size=100, cuda_graph=True)
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = train(_model("ae", digits), digits, settings, out=tmp_path / "straight", device="cuda", progress=False)
    train(
        _model("ae", digits),
        digits,
        TrainSettings(epochs=2, batch_size=100, **first),
        out=tmp_path / "resumed",
        device="cuda",
        progress=False,
    )
    resumed = train(
        _model("ae", digits), digits, settings, out=tmp_path / "resumed", device="cuda", resume=True, progress=False
    )
    assert len(resumed) == 5
    assert resumed[-1]["test_loss"] == pytest.approx(straight[-1]["test_loss"], rel=1e-3)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = [
        "--model",
        "ae",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--hidden",
        "64,32",
        "--code-dim",
        "8",
        "--no-progress",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "aekit", "train", "--out", str(tmp_path / "one"), *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            *TORCHRUN_2,
            *AEKIT_TRAIN,
            "--out",
            str(tmp_path / "two"),
            *common,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4)  # a wrong shard differs by ~0.06
    # (The ragged last batch splits 15/14 over the ranks, so the two runs differ in the last few digits.)
    assert double.stdout.count('"sse_per_example"') == 1  # only rank 0 reports and writes


@pytest.mark.slow
def test_a_vae_resumed_under_torchrun_draws_the_noise_of_an_uninterrupted_job(tmp_path):
    common = [
        "--model",
        "vae",
        "--batch-size",
        "64",
        "--hidden",
        "32",
        "--code-dim",
        "4",
        "--no-progress",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def job(out, *extra):
        result = subprocess.run(
            [
                *TORCHRUN_2,
                *AEKIT_TRAIN,
                "--out",
                str(tmp_path / out),
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    job("straight", *common, "--epochs", "2")
    job("resumed", *common, "--epochs", "1")
    job("resumed", "--resume", "--epochs", "2", "--no-progress", "--device", "cpu")
    straight, resumed = (load_file(tmp_path / out / "model.safetensors") for out in ("straight", "resumed"))
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key  # each epoch's noise is seeded by epoch and rank
