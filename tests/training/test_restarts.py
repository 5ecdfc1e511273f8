"""A worker killed under ``torchrun --max-restarts``: torchrun relaunches the group, the new workers resume from the
last checkpoint by themselves, and the run ends where an uninterrupted one ends."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TORCHRUN_2
from safetensors.torch import load_file

from aekit.training import run_folder

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="finds torchrun's workers through /proc")

EPOCHS = 3
ARGS = [
    *"--model ae --hidden 32 --code-dim 4 --batch-size 16 --epochs".split(),
    str(EPOCHS),
    *"--no-progress --device cpu".split(),
]


@pytest.fixture
def torchrun(tmp_path):
    """Starts two gloo workers training digits into tmp_path/NAME under torchrun (output to NAME.out and NAME.err
    beside it: a full pipe would block); whatever is still running at the end is killed."""
    launched = []

    def launch(name: str, *options: str) -> subprocess.Popen:
        logs = [open(tmp_path / f"{name}{suffix}", "w") for suffix in (".out", ".err")]
        launched.append(
            subprocess.Popen(
                [
                    *TORCHRUN_2,
                    *options,
                    "-m",
                    "aekit",
                    "train",
                    "--out",
                    str(tmp_path / name),
                    *ARGS,
                ],
                stdout=logs[0],
                stderr=logs[1],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        )
        for log in logs:
            log.close()
        return launched[-1]

    yield launch
    for launcher in launched:
        if launcher.poll() is None:  # a failed test: its workers live in sessions of their own
            for pid in _workers(launcher).values():
                os.kill(pid, signal.SIGKILL)
            launcher.kill()
            launcher.wait()


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """The pids of torchrun's workers by rank (each one's environment, in /proc, says which rank it is)."""
    workers = {}
    for children in Path(f"/proc/{launcher.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile
                continue
            ranks = [int(line[5:]) for line in environment if line.startswith(b"RANK=")]
            if ranks:
                workers[ranks[0]] = int(pid)
    return workers


def _history(out: Path) -> list[dict]:
    with open(out / run_folder.HISTORY) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_killed_worker_is_relaunched_and_the_run_ends_as_an_uninterrupted_one(tmp_path, torchrun):
    # The uninterrupted reference runs alongside, which keeps the test short on two cores.
    straight = torchrun("straight")
    job = torchrun("killed", "--max-restarts", "1")
    out = tmp_path / "killed"
    deadline = time.monotonic() + 120
    while not (out / run_folder.CHECKPOINT).exists():
        assert job.poll() is None, out.with_suffix(".err").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    time.sleep(0.05)  # into the next epoch's steps (90 per epoch, each with an all-reduce)
    finished = _history(out)
    os.kill(_workers(job)[1], signal.SIGKILL)
    # Killed after the first checkpoint and before the end: rank 0 cannot finish alone, so exit status 0 below means
    # torchrun relaunched both workers and they finished the run.
    assert 1 <= len(finished) < EPOCHS
    assert job.wait(timeout=150) == 0, out.with_suffix(".err").read_text()[-3000:]
    assert straight.wait(timeout=150) == 0, (tmp_path / "straight.err").read_text()[-3000:]
    history = _history(out)
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    assert history[: len(finished)] == finished  # kept from the checkpoint, not trained again (timings would differ)
    resumed, uninterrupted = load_file(out / run_folder.WEIGHTS), load_file(tmp_path / "straight" / run_folder.WEIGHTS)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        # Bit for bit: the checkpoint holds weights, Adam state and data order, the AE draws no random numbers, and
        # a 2-rank gloo all-reduce adds the same two numbers in either order.
        assert torch.equal(resumed[key], value), key
