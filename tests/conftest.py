from pathlib import Path

import pytest

from aekit.data import load_dataset

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(),
                                 reason=f"real MNIST is not in this checkout ({MNIST_DIR} is missing)")


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")
