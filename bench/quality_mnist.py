"""Quality on the MNIST test set against the published figures, written to bench/RESULTS.md ("## Quality on MNIST").

  - PCA with 30 components: squared error per test image (Hinton & Salakhutdinov 2006: 13.87);
  - auto-encoders with a 30-dimensional code, the MLP 784-1000-500-250-30 and convolutional ones (BCE on the [0, 1]
    intensities, Adam, cosine schedule, batch 128), same measure (the paper's pretrained deep auto-encoder: 3.00);
  - the VAE of Burda et al. (2015), Table 1: 784-200-200-50, one stochastic layer, trained on dynamically binarized
    MNIST with the ELBO and with the IWAE bound, scored by the importance-weighted NLL estimate on the test set
    binarized once with a fixed seed (they report 86.76 nats for the VAE and 84.78 for IWAE k=50, with k=5000);
  - probe accuracies (5-NN, logistic regression) of every model's codes beside PCA's.

--quick runs in a few minutes on a 2-core CPU (fewer examples and epochs, fewer importance samples: a smoke test of
the whole pipeline, not the published protocol); the full mode is meant for a GPU (it uses CUDA when available,
compiles the training step there, and records the device).

    python bench/quality_mnist.py --data-dir ../shared/data/mnist --quick
    python bench/quality_mnist.py --data-dir ../shared/data/mnist            # full: on a GPU
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.data import Dataset, load_dataset
from aekit.data.binarize import binarized
from aekit.evaluate import evaluate, importance_weighted_nll
from aekit.models import ModelSpec, build_model
from aekit.report import markdown_table
from aekit.trainer import TrainSettings, resolve_device, train

SECTION = "## Quality on MNIST"
PUBLISHED = {"pca": 13.87, "ae": 3.00, "vae": 86.76, "iwae": 84.78}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    train_examples: int | None  # None: all 60,000
    ae_epochs: int
    ae_batch: int
    conv_channels: tuple[tuple[int, ...], ...]
    vae_epochs: int
    vae_batch: int
    iw_samples: int
    nll_samples: int
    nll_examples: int | None  # None: all 10,000 test images


# Quick: one pass over 10,000 images in batches of 32 (on a CPU, more small steps beat fewer large ones early on).
QUICK = Mode("quick", 10_000, 1, 32, ((32, 64),), 1, 32, 5, 200, 500)
FULL = Mode("full", None, 150, 128, ((32, 64), (64, 128, 256)), 1000, 100, 50, 5000, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding the four MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="a few minutes on a 2-core CPU")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda")
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")),
                        help="the Markdown file whose '## Quality on MNIST' section is rewritten")
    parser.add_argument("--ae-epochs", type=int, help="override the auto-encoders' epochs")
    parser.add_argument("--vae-epochs", type=int, help="override the VAE's and IWAE's epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    mode = dataclasses.replace(mode, ae_epochs=args.ae_epochs or mode.ae_epochs,
                               vae_epochs=args.vae_epochs or mode.vae_epochs)
    device = resolve_device(args.device)
    started = time.perf_counter()

    mnist = load_dataset("mnist", data_dir=args.data_dir)
    data = mnist if mode.train_examples is None else dataclasses.replace(
        mnist, x_train=mnist.x_train[:mode.train_examples], y_train=mnist.y_train[:mode.train_examples])
    log = Log()
    log.say(f"{mode.name} mode on {device_name(device)}; {len(data.x_train)} training images, "
            f"{len(data.x_test)} test images")

    ae_rows, vae_rows = [], []
    pca = build_model(ModelSpec("pca", mnist.shape, code_dim=30))
    seconds = train(pca, mnist, device=device, progress=False)[0]["seconds"]  # closed form: always all 60,000
    ae_rows.append(log.row("PCA, 30 components", "pca", {**evaluate(pca, data), "train_seconds": seconds,
                                                        "parameters": parameters(pca)},
                           "scikit-learn PCA (full SVD) on all 60,000 training images"))

    ae_settings = TrainSettings(epochs=mode.ae_epochs, batch_size=mode.ae_batch, lr=1e-3, schedule="cosine",
                                seed=args.seed, compile=device.type == "cuda")
    nets = [("MLP 784-1000-500-250-30", {"net": "mlp", "hidden": (1000, 500, 250)})]
    nets += [(f"conv {'-'.join(map(str, c))} -> 30", {"net": "conv", "hidden": c}) for c in mode.conv_channels]
    for label, net in nets:
        model, seconds = fit(ModelSpec("ae", mnist.shape, code_dim=30, **net), data, ae_settings, device, args.seed)
        ae_rows.append(log.row(f"AE {label}", "ae", {**evaluate(model, data), "train_seconds": seconds,
                                                     "parameters": parameters(model)},
                               f"BCE, Adam 1e-3 cosine, batch {mode.ae_batch}, {epochs(mode.ae_epochs)}"))

    test_binary = binarized(mnist).x_test[:mode.nll_examples]
    vae_settings = dataclasses.replace(ae_settings, epochs=mode.vae_epochs, batch_size=mode.vae_batch)
    for label, objective, key in (("VAE", "elbo", "vae"), (f"IWAE k={mode.iw_samples}", "iwae", "iwae")):
        spec = ModelSpec("vae", mnist.shape, code_dim=50, hidden=(200, 200), objective=objective,
                         iw_samples=mode.iw_samples, binarize=True)
        model, seconds = fit(spec, data, vae_settings, device, args.seed)
        metrics = {**evaluate(model, data), "train_seconds": seconds, "parameters": parameters(model)}
        estimate = importance_weighted_nll(model, test_binary, mode.nll_samples, batch_size=100,
                                           max_rows=2**18 if device.type == "cuda" else 2**15)
        metrics.update(nll=float(estimate.nll.mean()), nll_samples=mode.nll_samples, nll_examples=len(test_binary))
        vae_rows.append(log.row(f"{label} 784-200-200-50", key, metrics,
                                f"dynamically binarized, Adam 1e-3 cosine, batch {mode.vae_batch}, "
                                f"{epochs(mode.vae_epochs)}"))

    wall = time.perf_counter() - started
    text = section(mode, device, ae_rows, vae_rows, wall, " ".join(["python", *sys.argv]))
    print("\n" + text)
    write_section(Path(args.results), mode, text)
    print(f"written to {args.results}", file=sys.stderr)
    return 0


def fit(spec: ModelSpec, data: Dataset, settings: TrainSettings, device: torch.device, seed: int):
    """A freshly seeded model of ``spec`` trained on ``data``; returns it and its training seconds."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(spec)
    history = train(model, data, settings, device=device, progress=False, test_each_epoch=False)
    return model, sum(record["seconds"] for record in history)


def epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def parameters(model: torch.nn.Module) -> int:
    """Learned numbers: the weights, or for PCA its mean and components."""
    return sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())


class Log:
    """Prints each result as it comes, with the time since the start."""

    def __init__(self):
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {text}", flush=True)

    def row(self, label: str, key: str, metrics: dict, settings: str) -> dict:
        row = {"label": label, "key": key, "settings": settings, **metrics}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        self.say(f"{label}: {shown}")
        return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def section(mode: Mode, device: torch.device, ae_rows: list[dict], vae_rows: list[dict], wall: float,
            command: str) -> str:
    """The Markdown of one mode's results: settings, the published figures beside ours, the probes."""
    today = datetime.date.today().isoformat()
    lines = [f"### {mode.name.capitalize()} mode", "",
             f"{today}, {device_name(device)}, torch {torch.__version__}, aekit {aekit.__version__}; "
             f"wall time {wall / 60:.1f} min.", "", f"    {command}", "",
             f"Training: {mode.train_examples or 60000} of the 60,000 training images (PCA: all of them); "
             f"auto-encoders {epochs(mode.ae_epochs)} of batch {mode.ae_batch}, VAE and IWAE (k={mode.iw_samples}) "
             f"{epochs(mode.vae_epochs)} of batch {mode.vae_batch}; "
             f"NLL estimated with k={mode.nll_samples} importance samples on "
             f"{mode.nll_examples or 10000} test images binarized once with seed 0.", ""]
    compared = []
    for row in ae_rows:
        compared.append({"what": f"{row['label']}: squared error per test image", "published": PUBLISHED[row["key"]],
                         "ours": row["sse_per_example"], "seconds": row["train_seconds"]})
    for row in vae_rows:
        published = PUBLISHED[row["key"]] if row["key"] == "vae" or mode.iw_samples == 50 else None
        compared.append({"what": f"{row['label']}: NLL (k={row['nll_samples']}), nats", "published": published,
                         "ours": row["nll"], "seconds": row["train_seconds"]})
    for entry in compared:
        published = entry["published"]
        # Published figures are rounded to two decimals: a tie within that rounding counts as reached.
        entry["reached"] = "-" if published is None else "yes" if entry["ours"] <= published + 0.005 else "no"
    lines.append(markdown_table(compared, ["what", "published", "ours", "reached", "seconds"],
                                {"published": ".2f", "ours": ".3f", "seconds": ".0f"}))
    probes = [{"model": row["label"], "code": 50 if row["key"] in ("vae", "iwae") else 30, **row} for row in ae_rows + vae_rows]
    lines += ["Test metrics (probes fitted on the training codes, scored on the test codes; the VAEs on the "
              "binarized data):", "",
              markdown_table(probes, ["model", "code", "sse_per_example", "bce_per_example", "neg_elbo",
                                      "knn_accuracy", "logreg_accuracy", "parameters", "settings"],
                             {"sse_per_example": ".3f", "bce_per_example": ".2f", "neg_elbo": ".2f",
                              "knn_accuracy": ".4f", "logreg_accuracy": ".4f"})]
    missed = [entry["what"].split(":")[0] for entry in compared if entry["reached"] == "no"]
    lines.append("Published figures not reached in this run: " + ("; ".join(missed) if missed else "none") + ".")
    return "\n".join(lines) + "\n"


def write_section(path: Path, mode: Mode, text: str) -> None:
    """Put ``text`` as the mode's subsection of the '## Quality on MNIST' section of ``path``, keeping the rest."""
    content = path.read_text() if path.exists() else ""
    if SECTION not in content:
        content = content.rstrip() + ("\n\n" if content.strip() else "") + f"{SECTION}\n\n"
    start = content.index(SECTION)
    following = re.search(r"^## ", content[start + len(SECTION):], flags=re.M)
    end = start + len(SECTION) + following.start() if following else len(content)
    body = content[start:end]
    heading = f"### {mode.name.capitalize()} mode"
    if heading in body:
        at = body.index(heading)
        after = re.search(r"^### ", body[at + len(heading):], flags=re.M)
        body = body[:at] + text + ("\n" + body[at + len(heading) + after.start():] if after else "")
    else:
        body = body.rstrip() + "\n\n" + text
    path.write_text(content[:start] + body.rstrip() + "\n" + ("\n" + content[end:] if content[end:] else ""))


if __name__ == "__main__":
    sys.exit(main())
