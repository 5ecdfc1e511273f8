"""What the benchmarks of the uses of codes (denoise, upscale, compress) share: the MNIST data, seeded training,
the command line, and rewriting their own section of bench/RESULTS.md."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import Dataset, load_dataset
from aekit.models import ModelSpec, build_model
from aekit.trainer import TrainSettings, resolve_device, train
from measure import device_name

RESULTS = Path(__file__).with_name("RESULTS.md")


def parser(description: str, epochs: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True, help="folder holding the four MNIST IDX files")
    parser.add_argument("--train-examples", type=int, default=60000, help="train on the first N training images")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per model (default: {epochs})")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file whose section is rewritten")
    return parser


class Bench:
    """One benchmark run: the data, the device, the training settings and a log with the time since the start."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.perf_counter()
        self.device = resolve_device(args.device)
        mnist = load_dataset("mnist", data_dir=args.data_dir)
        self.data: Dataset = dataclasses.replace(mnist, x_train=mnist.x_train[:args.train_examples],
                                                 y_train=mnist.y_train[:args.train_examples])
        self.settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, schedule="cosine",
                                      seed=args.seed, compile=self.device.type == "cuda")
        self.say(f"{len(self.data.x_train)} training images, {len(self.data.x_test)} test images, "
                 f"{device_name(self.device)}")

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {text}", flush=True)

    def fit(self, spec: ModelSpec) -> torch.nn.Module:
        """A freshly seeded model of ``spec`` trained on the training images, in evaluation mode, on the CPU."""
        torch.manual_seed(self.args.seed)
        np.random.seed(self.args.seed)
        model = build_model(spec)
        started = time.perf_counter()
        if getattr(model, "closed_form", False):
            model.fit(self.data.x_train)
        else:
            train(model, self.data, self.settings, device=self.device, progress=False, test_each_epoch=False)
        self.say(f"fitted {spec.model} (code {spec.code_dim}, task {spec.task}) in "
                 f"{time.perf_counter() - started:.0f} s")
        return model.cpu().eval()

    def settings_line(self) -> str:
        return (f"{datetime.date.today().isoformat()}, {device_name(self.device)}, torch {torch.__version__}, "
                f"aekit {aekit.__version__}; {len(self.data.x_train)} training images, {self.args.epochs} epochs "
                f"of batch {self.args.batch_size} per model (Adam 1e-3, cosine schedule), seed {self.args.seed}; "
                f"wall time {(time.perf_counter() - self.started) / 60:.1f} min.\n\n    python "
                + " ".join(sys.argv) + "\n")


    def publish(self, heading: str, text: str) -> None:
        """Print the results and make them the ``heading`` section of the results file."""
        print("\n" + text)
        write_section(self.args.results, heading, text)


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the ``heading`` section (``## ...`` up to the next ``## ``) of ``path`` by ``text``, or append it."""
    content = path.read_text() if path.exists() else ""
    text = text.rstrip() + "\n"
    match = re.search(rf"^{re.escape(heading)}\n", content, flags=re.M)
    if match is None:
        path.write_text(content.rstrip() + "\n\n" + text if content.strip() else text)
        return
    following = re.search(r"^## ", content[match.end():], flags=re.M)
    rest = content[match.end() + following.start():] if following else ""
    path.write_text(content[:match.start()] + text + ("\n" + rest if rest else ""))
