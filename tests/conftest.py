import multiprocessing.process
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aekit.data import load_dataset

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
# scikit-learn's joblib would otherwise start a process to count the physical cores.
os.environ.setdefault("LOKY_MAX_CPU_COUNT", str(os.cpu_count() or 1))
# torchrun with two processes on this machine, and `aekit train` as the module it runs (or as a plain command).
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
AEKIT_TRAIN = ["-m", "aekit", "train"]
needs_mnist = pytest.mark.skipif(
    not MNIST_DIR.is_dir(), reason=f"real MNIST is not in this checkout ({MNIST_DIR} is missing)"
)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request, monkeypatch):
    """A test that starts a process (a subprocess, a worker pool, torchrun) must be marked slow, so that
    ``pytest -m "not slow"`` is the quick in-process loop: anywhere else, starting one fails the test."""
    if request.node.get_closest_marker("slow"):
        return

    def refused(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process; mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refused)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets run faster on one thread than on two that wait on each other (the CI machine has two shared
    cores); the module's tests use it through ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
