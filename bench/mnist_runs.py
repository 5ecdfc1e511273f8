"""What the benchmarks of the uses of codes (denoise, upscale, compress) share: the MNIST data, seeded training,
the command line, and rewriting their own section of bench/RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import Dataset, load_dataset
from aekit.models import ModelConfig, build_model
from aekit.training import run_folder
from aekit.training.trainer import TrainSettings, resolve_device, train
from bench.measure import device_name

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
    parser.add_argument(
        "--checkpoints",
        type=Path,
        help="keep each model's training checkpoint in a folder of its own here, and go on from one found there "
        "(a rerun, or runs of parts of a benchmark side by side, train each model once)",
    )
    return parser


class Bench:
    """One benchmark run: the data, the device, the training settings and a log with the time since the start."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.perf_counter()
        self.device = resolve_device(args.device)
        mnist = load_dataset("mnist", data_dir=args.data_dir)
        self.data: Dataset = dataclasses.replace(
            mnist, x_train=mnist.x_train[: args.train_examples], y_train=mnist.y_train[: args.train_examples]
        )
        self.settings = TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=1e-3,
            schedule="cosine",
            seed=args.seed,
            compile=self.device.type == "cuda",
        )
        self.say(
            f"{len(self.data.x_train)} training images, {len(self.data.x_test)} test images, {device_name(self.device)}"
        )

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {text}", flush=True)

    def fit(self, spec: ModelConfig) -> torch.nn.Module:
        """A freshly seeded model of ``spec`` trained on the training images, in evaluation mode, on the CPU."""
        out = None if self.args.checkpoints is None else self.args.checkpoints / self.checkpoint_name(spec)
        with contextlib.nullcontext() if out is None else _waited_for(out.parent / f"{out.name}.lock"):
            model, seconds = fit(spec, self.data, self.settings, self.device, self.args.seed, out)
        task = f", task {spec.task}" if hasattr(spec, "task") else ""
        self.say(f"fitted {spec.family} (code {spec.code_dim}{task}) in {seconds:.0f} s")
        return model.cpu().eval()

    def checkpoint_name(self, spec: ModelConfig) -> str:
        """A folder name that differs with the model's settings, the training's and the data's size."""
        key = repr((spec, dataclasses.replace(self.settings, compile=False), len(self.data.x_train)))
        return f"{spec.family}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def settings_line(self) -> str:
        return (
            f"{datetime.date.today().isoformat()}, {device_name(self.device)}, torch {torch.__version__}, "
            f"aekit {aekit.__version__}; {len(self.data.x_train)} training images, {self.args.epochs} epochs "
            f"of batch {self.args.batch_size} per model (Adam 1e-3, cosine schedule), seed {self.args.seed}; "
            f"wall time {(time.perf_counter() - self.started) / 60:.1f} min.\n\n    python " + " ".join(sys.argv) + "\n"
        )

    def publish(self, heading: str, text: str) -> None:
        """Print the results and make them the ``heading`` section of the results file."""
        print("\n" + text)
        write_section(self.args.results, heading, text)


@contextlib.contextmanager
def _waited_for(path: Path):
    """An exclusive lock on ``path``, waited for: of two benchmark runs that train one model, the second goes on
    from the first's finished checkpoint instead of training it at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def fit(
    spec: ModelConfig, data: Dataset, settings: TrainSettings, device: torch.device, seed: int, out: Path | None = None
):
    """A freshly seeded model of ``spec`` trained on ``data`` (closed-form ones fitted); returns it and the seconds
    its training took. With ``out``, training checkpoints there each epoch and goes on from a checkpoint it finds
    (which must come from the same spec and settings), so a run cut short by a time limit loses at most an epoch."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(spec)
    resume = out is not None and (out / run_folder.CHECKPOINT).exists()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    history = train(model, data, settings, out=out, resume=resume, device=device, progress=False, test_each_epoch=False)
    return model, sum(record["seconds"] for record in history)


def write_section(path: Path, heading: str, text: str, within: str | None = None) -> None:
    """Replace the ``heading`` section of ``path`` (from that line up to the next heading of the same or a higher
    level) by ``text``; if there is none, add ``text`` at the end of the ``within`` section, or of the file."""
    content = path.read_text() if path.exists() else ""
    text = text.rstrip() + "\n"
    match = re.search(rf"^{re.escape(heading)}\n", content, flags=re.M)
    if match is not None:
        start, end = match.start(), _section_end(content, match.end(), heading)
    else:
        parent = re.search(rf"^{re.escape(within)}\n", content, flags=re.M) if within else None
        if within and parent is None:
            content = content.rstrip() + ("\n\n" if content.strip() else "") + f"{within}\n"
            parent = re.search(rf"^{re.escape(within)}\n", content, flags=re.M)
        start = end = _section_end(content, parent.end(), within) if parent else len(content)
    before, after = content[:start].rstrip(), content[end:].lstrip("\n")
    path.write_text((before + "\n\n" if before else "") + text + ("\n" + after if after else ""))


def merge_json(path: Path, measured: list[dict], key, order, published: list[dict]) -> list[dict]:
    """Write the ``measured`` rows over those of the same ``key`` in the JSON list ``path`` (the other measured rows
    kept), sorted by ``order``, then the ``published`` rows anew; return all of them. A lock beside the file lets
    runs of parts side by side each add their rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = json.loads(path.read_text()) if path.exists() else []
        new = {key(row) for row in measured}
        rows = [row for row in kept if not row.get("published") and key(row) not in new] + measured
        rows = sorted(rows, key=order) + published
        path.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _section_end(content: str, position: int, heading: str) -> int:
    """Where the section whose heading line ends at ``position`` ends: at the next heading of its level or higher."""
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"^#{{1,{level}}} ", content[position:], flags=re.M)
    return position + following.start() if following else len(content)
