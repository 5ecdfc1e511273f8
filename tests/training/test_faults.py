"""Faults: signals stop training with a resumable checkpoint, killed runs resume exactly, NaN steps can be skipped,
and one run folder has one writer."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_training import _PoisonedAE

from aekit.cli import main
from aekit.errors import Interrupted, RunError
from aekit.models import build_model, model_config
from aekit.training import run_folder
from aekit.training.trainer import TrainSettings, train

ARGS = "--model vae --hidden 32 --code-dim 4 --batch-size 16 --epochs 12 --no-progress --device cpu".split()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "aekit", "train", "--out", str(out), *ARGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    process = _train(out)
    assert process.wait(timeout=300) == 0, process.communicate()
    return load_file(out / run_folder.WEIGHTS)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
@pytest.mark.slow
def test_a_stopped_or_killed_run_resumes_to_the_same_weights_bit_for_bit(how, tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = _train(out)
    _wait_for(out / run_folder.CHECKPOINT, process)
    time.sleep(0.05)  # somewhere inside the second epoch (90 steps each), or at its end
    process.send_signal(getattr(signal, how))
    status = process.wait(timeout=120)
    _, err = process.communicate()
    if how == "SIGKILL":
        assert status == -signal.SIGKILL
    else:
        assert status == 128 + getattr(signal, how), err
        assert "stopped by" in err and "--resume" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    resumed = subprocess.run(
        [sys.executable, "-m", "aekit", "train", "--resume", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    weights = load_file(out / run_folder.WEIGHTS)
    for key, value in uninterrupted.items():
        assert torch.equal(weights[key], value), key


class _SignalAt(_PoisonedAE):
    """Sends this process SIGTERM (``times`` times) from inside the loss at a chosen call, i.e. at a known step."""

    times = 1

    def phases(self):
        phase = self.inner.phases()[0]
        original = phase.loss

        def loss(x):
            self.calls += 1
            if self.calls == self.poison_at:
                for _ in range(self.times):
                    signal.raise_signal(signal.SIGTERM)
            return original(x)

        phase.loss = loss
        return [phase]


def test_a_mid_epoch_stop_checkpoints_its_position_and_resumes_exactly(digits, tmp_path):
    from aekit.errors import TrainingStopped

    settings = TrainSettings(epochs=2, batch_size=64, seed=1)
    torch.manual_seed(0)
    straight = build_model(model_config("dae", digits.shape, code_dim=8, hidden=(64, 32)))
    train(straight, digits, settings, device="cpu", progress=False)
    torch.manual_seed(0)
    inner = build_model(model_config("dae", digits.shape, code_dim=8, hidden=(64, 32)))
    with pytest.raises(TrainingStopped, match="SIGTERM after step 10 of epoch 2"):
        train(_SignalAt(inner, poison_at=23 + 10), digits, settings, out=tmp_path, device="cpu", progress=False)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    state = run_folder.load_checkpoint(tmp_path / run_folder.CHECKPOINT)
    assert state["position"]["step"] == 10 and len(state["history"]) == 1
    torch.manual_seed(99)
    resumed = build_model(model_config("dae", digits.shape, code_dim=8, hidden=(64, 32)))
    history = train(
        _SignalAt(resumed, poison_at=-1), digits, settings, out=tmp_path, device="cpu", progress=False, resume=True
    )
    assert len(history) == 2
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_a_second_sigterm_interrupts_training_at_once_as_sigterm(digits, tmp_path):
    model = _SignalAt(build_model(model_config("ae", digits.shape, code_dim=2, hidden=(8,))), poison_at=5)
    model.times = 2
    settings = TrainSettings(epochs=1, batch_size=64)
    with pytest.raises(Interrupted) as interrupted:  # a KeyboardInterrupt, that the CLI ends with 128 + 15
        train(model, digits, settings, out=tmp_path, device="cpu", progress=False)
    assert interrupted.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_outside_the_training_loop_interrupts_as_ctrl_c_does(capsys, tmp_path, monkeypatch):
    # SIGTERM while the run is set up, before the loop takes the signal itself: nothing kept, as after Ctrl-C.
    from aekit.jobs import workflow

    def unhandled(number, frame):
        raise AssertionError("SIGTERM was left to its default action, which kills the process where it stands")

    out = tmp_path / "run"
    monkeypatch.setattr(workflow, "train", lambda *args, **kwargs: signal.raise_signal(signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        status = main(["train", "--out", str(out), "--epochs", "2", "--hidden", "8", "--no-progress"])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert status == 128 + signal.SIGTERM and err.startswith("aekit: interrupted by SIGTERM; ") and "again" in err, err
    assert not out.exists()


@pytest.mark.slow
def test_a_use_stopped_by_sigterm_writes_nothing(tmp_path, digits):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--hidden", "8", "--code-dim", "2", "--no-progress"]) == 0
    np.save(tmp_path / "noisy.npy", np.tile(np.asarray(digits.x_train, np.float32), (40, 1, 1, 1)))  # 57,520 rows
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "aekit", "denoise", str(run), str(tmp_path / "noisy.npy"), "--out", str(out / "x.npy")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not list(out.iterdir()):  # the output's hidden temporary file: denoising has begun
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM and err == "aekit: interrupted by SIGTERM\n", err
    assert list(out.iterdir()) == []


def test_skip_policy_drops_non_finite_updates_and_counts_them(digits):
    torch.manual_seed(0)
    inner = build_model(model_config("ae", digits.shape, code_dim=8, hidden=(64, 32)))
    history = train(
        _PoisonedAE(inner, poison_at=30),
        digits,
        TrainSettings(epochs=2, batch_size=64, on_nan="skip"),
        device="cpu",
        progress=False,
    )
    # Every call from the 30th on is poisoned: steps 30..46 of the 46 are skipped.
    assert [r["skipped_steps"] for r in history] == [0, 17]
    assert all(torch.isfinite(p).all() for p in inner.parameters())


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    with run_folder.RunLock(out):
        result = subprocess.run(
            [sys.executable, "-m", "aekit", "train", "--out", str(out), *ARGS],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
        assert result.returncode == 2 and "in use by process" in result.stderr
        assert not (out / run_folder.CONFIG).exists()
        with pytest.raises(RunError, match="in use"):
            run_folder.RunLock(out).__enter__()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / run_folder.LOCK).write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")
    with run_folder.RunLock(out):
        assert (out / run_folder.LOCK).read_text().split()[-1] == str(os.getpid())
    assert not (out / run_folder.LOCK).exists()


def test_a_planted_pickle_in_a_run_folder_is_never_executed(tmp_path, capsys):
    from aekit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--model", "ae", "--hidden", "32", "--epochs", "1", "--no-progress"]) == 0
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Exploit()}, out / run_folder.CHECKPOINT)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    assert "corrupt or not a checkpoint" in capsys.readouterr().err
    assert not marker.exists()
