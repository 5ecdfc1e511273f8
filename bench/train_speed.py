"""Training speed on MNIST in the configuration of PyTorch's VAE example (784-400-20, Adam 1e-3, batch 128,
summed cross-entropy + KL), timed per epoch in one process for:

  (a) aekit's trainer (data resident on the device, no per-step synchronisation); on CUDA each way it can run the
      step, side by side: torch.compile ("aekit-compile"), captured by hand as CUDA graphs ("aekit-cuda-graph"), both
      ("aekit-compile+cuda-graph": the compiled kernels captured by hand) and eager ("aekit-eager"), the fastest of
      them standing for aekit in the ratios (--steps picks others, e.g. compile on a CPU);
  (b) the example's loop: a Dataset whose __getitem__ makes a PIL image of one uint8 example and converts it to a
      float tensor in [0, 1], a shuffling DataLoader with batch 128 that, as the example's, has one worker process
      and pins memory on a GPU and loads in the training process on a CPU, and the loss read (.item()) every step;
  (c) the bare-compute floor: the same steps over batches already on the device, no data handling at all.

Prints the three medians (after warm-up epochs), `ratio: X` (reference / aekit), aekit / floor and the device, and
`memory: X` (target <= 2x): the peak memory of aekit's training over the data it holds plus the model's parameters,
their gradients and Adam's two moments. On CUDA the peak is torch.cuda.max_memory_allocated above what was allocated
when the contender started (what earlier ones left, such as compiled graphs' pools, is not its own) and the data is
the training set on the device; on a CPU it is the growth of the process's resident set from before the data is read
to its peak while training (see measure.py) and the data is the whole loaded dataset. With --accuracy, the test loss
per image after 10 epochs with the fastest step (the example's users report about 105.6); with --models, one epoch
of each aekit model at its defaults, run each way of --model-steps (on CUDA by default captured by hand and eager:
no compile time per model).

    python -m bench.train_speed --data-dir ../shared/data/mnist [--epochs 3] [--rounds 1] [--accuracy] [--models]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time

import numpy as np
import torch
import torch._dynamo.utils
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from aekit.data import load_dataset
from aekit.models import FAMILIES, ModelConfig, build_model, model_config
from aekit.training.trainer import TrainSettings, mean_loss, resolve_device, train
from bench.measure import MIB, STEPS, PeakMemory, device_name

BATCH = 128


class ExampleVAE(nn.Module):
    """The model of PyTorch's examples/vae/main.py."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_loss(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class PilDataset(TorchDataset):
    """What torchvision's MNIST with transforms.ToTensor() does for each item, step for step: index the uint8 image
    tensor and the label tensor, make a PIL image of the image's array, copy it back into a tensor, reshape it to
    (channels, height, width) and divide by 255 as float. Without torchvision, a large dependency the benchmark does
    not otherwise need; it skips torchvision's checks and wrappers, so it errs on the reference's side: on the 2-core
    CPU a pass over the 60,000 images took 2.4 s here against 2.8 s through torchvision 0.28, timed side by side."""

    def __init__(self, images_uint8: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.from_numpy(images_uint8), torch.from_numpy(labels)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image, label = self.images[i], int(self.labels[i])
        pil = Image.fromarray(image.numpy(), mode="L")
        pixels = torch.from_numpy(np.array(pil, np.uint8, copy=True)).view(pil.size[1], pil.size[0], 1)
        return pixels.permute((2, 0, 1)).contiguous().to(dtype=torch.float32).div(255), label


def time_epochs(run_epoch, epochs: int, warmup: int, device) -> list[float]:
    times = []
    for epoch in range(warmup + epochs):
        _sync(device)
        started = time.perf_counter()
        run_epoch()
        _sync(device)
        if epoch >= warmup:
            times.append(time.perf_counter() - started)
    return times


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_epochs(x_uint8: np.ndarray, labels: np.ndarray, device, epochs: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = ExampleVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # examples/vae/main.py: kwargs = {'num_workers': 1, 'pin_memory': True} if args.cuda else {}
    on_gpu = device.type == "cuda"
    loader = DataLoader(
        PilDataset(x_uint8, labels),
        batch_size=BATCH,
        shuffle=True,
        num_workers=int(on_gpu),
        pin_memory=on_gpu,
        persistent_workers=on_gpu,
    )

    def epoch():
        for x, _ in loader:
            x = x.to(device)
            opt.zero_grad()
            loss = example_loss(*_fwd(model, x))
            loss.backward()
            loss.item()  # the example's train_loss += loss.item(): a read of the loss every step
            opt.step()

    return time_epochs(epoch, epochs, warmup, device)


def _fwd(model, x):
    recon, mu, logvar = model(x)
    return recon, x, mu, logvar


def floor_epochs(x: torch.Tensor, device, epochs: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = ExampleVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = list(x.to(device).split(BATCH))

    def epoch():
        for batch in batches:
            opt.zero_grad()
            loss = example_loss(*_fwd(model, batch))
            loss.backward()
            opt.step()

    return time_epochs(epoch, epochs, warmup, device)


def aekit_epochs(dataset, spec: ModelConfig, device, epochs: int, warmup: int, step: str = "eager") -> list[float]:
    torch.manual_seed(0)
    model = build_model(spec)
    history = train(
        model,
        dataset,
        TrainSettings(epochs=warmup + epochs, batch_size=BATCH, **STEPS[step]),
        device=device,
        progress=False,
        test_each_epoch=False,
    )
    if warmup:  # what a run pays up front (compiling, capturing) beside its steady epochs
        seconds = ", ".join(f"{record['seconds']:.3f}" for record in history[:warmup])
        print(f"{'':24s} {step}: warm-up {seconds} s", flush=True)
    return [record["seconds"] for record in history[warmup:]]


def report_memory(peak: int, mnist, spec: ModelConfig, device, how: str) -> None:
    """Print aekit's training peak against data + parameters + gradients + Adam's two moments (4x the parameters)."""
    arrays = (mnist.x_train,) if device.type == "cuda" else (mnist.x_train, mnist.x_test, mnist.y_train, mnist.y_test)
    data = sum(a.nbytes for a in arrays if a is not None)
    state = 4 * sum(p.numel() * p.element_size() for p in build_model(spec).parameters())
    print(
        f"memory: {peak / (data + state):.2f}x (target <= 2x): peak {peak / MIB:.0f} MiB over {data / MIB:.0f} MiB "
        f"of data + {state / MIB:.1f} MiB of parameters, gradients and Adam state; {how}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the contenders one after another this many times and take the median over all "
        "their epochs, so a machine whose speed drifts slows them alike",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--steps",
        help="the ways of running aekit's step to time, comma-separated, of "
        f"{', '.join(STEPS)} (default: all of them on CUDA, eager elsewhere)",
    )
    parser.add_argument("--models", action="store_true", help="also time one epoch of each aekit model")
    parser.add_argument(
        "--model-steps",
        help="the ways of running the step for --models (default: cuda-graph,eager on CUDA, eager elsewhere)",
    )
    parser.add_argument("--accuracy", action="store_true", help="also train 10 epochs and report the test loss")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--epochs and --rounds need at least 1, --warmup at least 0")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = _step_list(parser, args.steps, tuple(STEPS) if cuda else ("eager",))
    model_steps = _step_list(parser, args.model_steps, ("cuda-graph", "eager") if cuda else ("eager",))

    print(f"device: {device} {device_name(device)}; torch {torch.__version__}")
    memory = PeakMemory(device)
    mnist = load_dataset("mnist", data_dir=args.data_dir)
    memory.reset()  # reading the files is not training: their transients do not count, the data they leave does
    spec = model_config("vae", mnist.shape, code_dim=20, hidden=(400,))

    aekit = {f"aekit-{step}" if len(steps) > 1 else "aekit": step for step in steps}
    contenders = {
        label: lambda step=step: aekit_epochs(mnist, spec, device, args.epochs, args.warmup, step)
        for label, step in aekit.items()
    }
    # The example's uint8 images, made once and only when its first round starts: made before aekit's first round,
    # their transients would count in aekit's memory peak.
    images_uint8 = functools.cache(lambda: np.rint(mnist.x_train[:, 0] * 255).astype(np.uint8))
    contenders["reference"] = lambda: reference_epochs(images_uint8(), mnist.y_train, device, args.epochs, args.warmup)
    contenders["floor"] = lambda: floor_epochs(torch.from_numpy(mnist.x_train), device, args.epochs, args.warmup)
    # Those that compile last: a run cut short by a time limit has measured the others.
    contenders = dict(sorted(contenders.items(), key=lambda item: STEPS.get(aekit.get(item[0]), {}).get("compile", 0)))
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for round_ in range(args.rounds):
        for label, run in contenders.items():
            if label not in times:
                continue
            if cuda:  # this contender's own peak: above what earlier ones left (freed once their cycles are collected)
                gc.collect()
                memory = PeakMemory(device)
            try:
                epochs = run()
            except Exception as error:  # one way of running the step failing here must not hide the others
                if label not in aekit or len(aekit) == 1:
                    raise
                print(f"{label:24s} failed: {error!r}"[:400], flush=True)
                del times[label]
                continue
            times[label] += epochs
            # As they come, so that a run stopped by a time limit has still shown what it measured.
            print(f"{label:24s} round {round_ + 1}: {', '.join(f'{t:.3f}' for t in epochs)} s", flush=True)
            if label in aekit and round_ == 0:
                report_memory(memory.growth(), mnist, spec, device, f"{label}, {memory.how}")
                skips = torch._dynamo.utils.counters["inductor"].pop("cudagraph_skips", 0)
                if skips:  # torch.compile fell back from CUDA graphs: its figures are not those of its graphs
                    print(f"{label:24s} torch.compile skipped CUDA graphs {skips} times", flush=True)
            memory.reset()
    results = {label: statistics.median(epochs) for label, epochs in times.items()}
    for label, median in results.items():
        print(f"{label:24s} median {median:.3f} s/epoch over {len(times[label])} epochs", flush=True)
    fastest = min((label for label in aekit if label in results), key=results.get)
    if len(aekit) > 1:
        print(f"aekit: {fastest} (the fastest way of running its step here)")
    print(f"ratio: {results['reference'] / results[fastest]:.2f}")
    print(f"aekit/floor: {results[fastest] / results['floor']:.3f}")

    if args.accuracy:
        torch.manual_seed(0)
        model = build_model(spec)
        train(
            model,
            mnist,
            TrainSettings(epochs=10, batch_size=BATCH, **STEPS[aekit[fastest]]),
            device=device,
            progress=False,
            test_each_epoch=False,
        )
        test_loss = mean_loss(model, torch.from_numpy(mnist.x_test).to(device))["loss"]
        print(f"test loss after 10 epochs: {test_loss:.2f} per image (target <= 106)")

    if args.models:
        for model_name in FAMILIES:
            if model_name == "pca":
                continue
            for step in model_steps:
                try:
                    seconds = f"{aekit_epochs(mnist, model_config(model_name, mnist.shape), device, 1, 1, step)[0]:.3f}"
                except Exception as error:  # one model failing one way must not hide the others
                    seconds = f"failed: {error!r}"[:300]
                print(
                    f"model {model_name:10s} {step:18s} {seconds} s/epoch (defaults: mlp 256,128, code 10)", flush=True
                )
    return 0


def _step_list(parser, given: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    steps = tuple(given.split(",")) if given else default
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        parser.error(f"unknown step {', '.join(unknown)}; use some of {', '.join(STEPS)}")
    return steps


if __name__ == "__main__":
    sys.exit(main())
