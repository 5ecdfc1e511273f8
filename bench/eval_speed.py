"""Speed of the importance-weighted NLL estimate (aekit.evaluation.measures.importance_weighted_nll) with k=5000 on the
10,000 MNIST test images, binarized once with aekit's fixed evaluation seed, for the VAE 784-200-200-50 of Burda et al.
(2015), as bench/quality_mnist.py runs it (examples 100 at a time; 2^18 decoded rows per chunk on CUDA, 2^15 on CPU).

The weights are freshly initialised (seed 0): the work (encoder, k decoder passes per image, log-sum-exp) does not
depend on them. Prints the seconds, images/s, the device, the peak memory of the estimate and the target (< 30 s
on an H100/H200). With --images or --k below 10,000 and 5000 (the whole takes about 7 minutes on a quiet 2-core
CPU), it also prints the time extrapolated linearly in images x k, labelled as such.

    python -m bench.eval_speed --data-dir ../shared/data/mnist                       # on a GPU
    python -m bench.eval_speed --data-dir ../shared/data/mnist --device cpu [--images 200]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from aekit.data import load_dataset
from aekit.data.binarize import binarized
from aekit.evaluation.measures import importance_weighted_nll
from aekit.models import build_model, model_config
from aekit.training.trainer import resolve_device
from bench.measure import MIB, PeakMemory, device_name

TEST_IMAGES, K = 10_000, 5000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=TEST_IMAGES, help="the first N test images")
    parser.add_argument("--k", type=int, default=K, help="importance samples per image")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="decoded (image, sample) rows per chunk (default 2^18 on CUDA, 2^15 elsewhere)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.images <= TEST_IMAGES:
        parser.error(f"--images {args.images} must be between 1 and {TEST_IMAGES}")

    device = resolve_device(args.device)
    max_rows = args.max_rows or (2**18 if device.type == "cuda" else 2**15)
    print(f"device: {device} {device_name(device)}; torch {torch.__version__}")
    mnist = load_dataset("mnist", data_dir=args.data_dir)
    torch.manual_seed(0)
    model = build_model(model_config("vae", mnist.shape, code_dim=50, hidden=(200, 200), binarize=True)).to(device)
    x = torch.from_numpy(binarized(mnist).x_test[: args.images]).to(device)
    print(
        f"model: VAE 784-200-200-50, freshly initialised (seed 0); data: the first {args.images} test images, "
        f"binarized with seed 0; k={args.k}, batch {args.batch_size}, max_rows {max_rows}"
    )
    # Warm-up (library initialisation, CUDA kernels): one batch with few samples.
    importance_weighted_nll(model, x[: args.batch_size], 10, args.batch_size, max_rows=max_rows)

    memory = PeakMemory(device)
    started = time.perf_counter()
    estimate = importance_weighted_nll(model, x, args.k, args.batch_size, max_rows=max_rows)
    seconds = time.perf_counter() - started  # the estimate ends by copying to the host: nothing left in flight
    peak = memory.growth()

    print(
        f"seconds: {seconds:.2f} for {args.images} images, k={args.k} ({args.images / seconds:.1f} images/s); "
        f"mean NLL {estimate.nll.mean():.2f} nats"
    )
    if (args.images, args.k) != (TEST_IMAGES, K):
        scale = TEST_IMAGES / args.images * K / args.k
        print(
            f"extrapolated linearly (x{scale:g}) to k={K} on all {TEST_IMAGES} images: {seconds * scale:.0f} s "
            "(an extrapolation, not a measurement)"
        )
    print(f"peak memory of the estimate: {peak / MIB:.0f} MiB above the data and model ({memory.how})")
    print("target: < 30 s on H100/H200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
