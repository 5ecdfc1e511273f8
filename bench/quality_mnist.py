"""Quality on the MNIST test set against the published figures, written to bench/RESULTS.md ("## Quality on MNIST").

  - PCA with 30 components: squared error per test image (Hinton & Salakhutdinov 2006: 13.87);
  - auto-encoders with a 30-dimensional code, the MLP 784-1000-500-250-30 and convolutional ones (BCE on the [0, 1]
    intensities, Adam, cosine schedule, batch 128), same measure (the paper's pretrained deep auto-encoder: 3.00);
  - the VAE of Burda et al. (2015), Table 1: 784-200-200-50, one stochastic layer, trained on dynamically binarized
    MNIST with the ELBO and with the IWAE bound, scored by the importance-weighted NLL estimate on the test set
    binarized once with a fixed seed (they report 86.76 nats for the VAE and 84.78 for IWAE k=50, with k=5000);
  - probe accuracies (5-NN, logistic regression) of every model's codes beside PCA's.

Three modes: --quick runs in a few minutes on a 2-core CPU (fewer examples and epochs, fewer importance samples: a
smoke test of the whole pipeline, not the published protocol); --mode cpu is what a 2-core CPU can do in about 1.5
hours (all the data and the published estimate, fewer epochs, no IWAE k=50 and no deep conv net, which take 36 s and
67 s an epoch there); the full mode is meant for a GPU (it uses CUDA when available, compiles the training step
there and captures it as CUDA graphs unless --step says otherwise, and records the device).

Each finished model is saved at once to bench/quality_<mode>.json and the mode's subsection of RESULTS.md redrawn
from every model saved there, so a run cut short keeps what it finished and --models can split a mode into several
runs (e.g. to fit a GPU's time limit per command; --resume skips the models already saved). A run whose settings
differ from the saved ones starts afresh. While a model trains it checkpoints each epoch under --runs-dir (a folder
named by a digest of its settings, removed once its row is saved), and --resume goes on from there: a model longer
than one command's time limit is trained over several. bench/on_device.sh runs it on a GPU with the speed benchmarks.

    python -m bench.quality_mnist --data-dir ../shared/data/mnist --quick
    python -m bench.quality_mnist --data-dir ../shared/data/mnist --mode cpu
    python -m bench.quality_mnist --data-dir ../shared/data/mnist                    # full: on a GPU
    python -m bench.quality_mnist --data-dir ../shared/data/mnist --models vae,iwae  # part of it
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import aekit
from aekit.atomic import atomic_write
from aekit.data import Dataset, load_dataset
from aekit.data.binarize import binarized
from aekit.evaluation import evaluate
from aekit.evaluation.measures import importance_weighted_nll
from aekit.models import model_config
from aekit.report.plots import markdown_table
from aekit.training.trainer import TrainSettings, resolve_device
from bench.measure import STEPS, device_name
from bench.mnist_runs import fit, write_section

SECTION = "## Quality on MNIST"
PUBLISHED = {"pca": 13.87, "ae": 3.00, "vae": 86.76, "iwae": 84.78}
MODELS = ("pca", "ae-mlp", "ae-conv", "ae-conv-deep", "vae", "iwae")


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    title: str
    train_examples: int | None  # None: all 60,000
    ae_epochs: int
    ae_batch: int
    vae_epochs: int
    vae_batch: int
    iw_samples: int
    nll_samples: int
    nll_examples: int | None  # None: all 10,000 test images


# Quick: one pass over 10,000 images in batches of 32 (on a CPU, more small steps beat fewer large ones early on).
MODES = {
    "quick": Mode("quick", "Quick", 10_000, 1, 32, 1, 32, 5, 200, 500),
    "cpu": Mode("cpu", "CPU", None, 100, 128, 500, 100, 50, 5000, None),
    "full": Mode("full", "Full", None, 150, 128, 1000, 100, 50, 5000, None),
}
DEFAULT_MODELS = {
    "quick": ("pca", "ae-mlp", "ae-conv", "vae", "iwae"),
    "cpu": ("pca", "ae-mlp", "ae-conv", "vae"),
    "full": ("pca", "ae-mlp", "vae", "ae-conv", "iwae", "ae-conv-deep"),
}  # cheap and telling first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding the four MNIST IDX files")
    parser.add_argument("--mode", choices=MODES, default="full", help="full (default: on a GPU), cpu or quick")
    parser.add_argument("--quick", action="store_true", help="the same as --mode quick: a few minutes on a 2-core CPU")
    parser.add_argument(
        "--models", help=f"comma-separated subset of {','.join(MODELS)}, run in that order (default: the mode's)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the models already saved with these settings in bench/quality_<mode>.json, and "
        "go on with a model's training from its checkpoint in --runs-dir",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(__file__).with_name("runs"),
        help="where each model checkpoints its training (default: bench/runs, git-ignored)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).with_name("RESULTS.md"),
        help="the Markdown file whose '## Quality on MNIST' section is rewritten",
    )
    parser.add_argument("--ae-epochs", type=int, help="override the auto-encoders' epochs")
    parser.add_argument("--vae-epochs", type=int, help="override the VAE's and IWAE's epochs")
    parser.add_argument(
        "--step",
        choices=STEPS,
        help="how the trainer runs a step: torch.compile, CUDA graphs "
        "captured by hand, both, or eagerly (default: both on CUDA, else "
        "eager)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else args.mode]
    mode = dataclasses.replace(
        mode, ae_epochs=args.ae_epochs or mode.ae_epochs, vae_epochs=args.vae_epochs or mode.vae_epochs
    )
    selected = DEFAULT_MODELS[mode.name] if args.models is None else tuple(args.models.split(","))
    unknown = sorted(set(selected) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    device = resolve_device(args.device)

    mnist = load_dataset("mnist", data_dir=args.data_dir)
    data = (
        mnist
        if mode.train_examples is None
        else dataclasses.replace(
            mnist, x_train=mnist.x_train[: mode.train_examples], y_train=mnist.y_train[: mode.train_examples]
        )
    )
    log = Log()
    log.say(
        f"{mode.name} mode on {device_name(device)}; {len(data.x_train)} training images, "
        f"{len(data.x_test)} test images; models {', '.join(selected)}"
    )
    saved = SavedRows(args.results.with_name(f"quality_{mode.name}.json"), mode, args.seed, log)
    # On CUDA both: the fastest way measured by train_speed.py (bench/RESULTS.md, "On a GPU").
    step = args.step or ("compile+cuda-graph" if device.type == "cuda" else "eager")
    settings = TrainSettings(lr=1e-3, schedule="cosine", seed=args.seed, **STEPS[step])
    command = " ".join(["python", *sys.argv])
    for key in selected:
        if args.resume and key in saved.rows:
            continue
        started = time.perf_counter()
        folder = run_folder(args.runs_dir, mode, args.seed, key)
        if not args.resume:
            shutil.rmtree(folder, ignore_errors=True)
        model, seconds, row = measure(key, mode, mnist, data, settings, device, args.seed, folder)
        row.update(
            evaluate(model, data),
            train_seconds=seconds,
            parameters=parameters(model),
            date=datetime.date.today().isoformat(),
            device=device_name(device),
            torch=torch.__version__,
            aekit=aekit.__version__,
            command=command,
            wall_seconds=time.perf_counter() - started,
        )
        log.say(f"{row['label']}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)))
        saved.put(key, row)
        shutil.rmtree(folder, ignore_errors=True)
        write_section(args.results, heading(mode), section(mode, saved.rows), within=SECTION)
    print("\n" + section(mode, saved.rows))
    print(f"written to {args.results} and {saved.path}", file=sys.stderr)
    return 0


def run_folder(root: Path, mode: Mode, seed: int, key: str) -> Path:
    """Where model ``key`` checkpoints its training: named by a digest of the mode's settings, the seed and the
    model, so a checkpoint is only ever resumed by the same training (the way the step runs may differ)."""
    identity = json.dumps({"mode": dataclasses.asdict(mode), "seed": seed, "model": key}, sort_keys=True)
    return root / f"{mode.name}-{key}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def measure(
    key: str,
    mode: Mode,
    mnist: Dataset,
    data: Dataset,
    settings: TrainSettings,
    device: torch.device,
    seed: int,
    out: Path | None = None,
) -> tuple[torch.nn.Module, float, dict]:
    """Train the benchmark's model ``key`` (checkpointing in ``out``, and going on from a checkpoint there): the
    model, its training seconds and what its row says besides the test metrics (label, settings, and for the VAEs
    the NLL estimate on the binarized test images)."""
    if key == "pca":  # closed form: always all 60,000 images
        model, seconds = fit(model_config("pca", mnist.shape, code_dim=30), mnist, settings, device, seed)
        return (
            model,
            seconds,
            {
                "label": "PCA, 30 components",
                "published_key": "pca",
                "code": 30,
                "settings": "scikit-learn PCA (full SVD) on all 60,000 training images",
            },
        )
    if key.startswith("ae-"):
        channels = {"ae-mlp": (1000, 500, 250), "ae-conv": (32, 64), "ae-conv-deep": (64, 128, 256)}[key]
        net = "mlp" if key == "ae-mlp" else "conv"
        label = f"AE {'MLP 784-1000-500-250-30' if net == 'mlp' else 'conv ' + '-'.join(map(str, channels)) + ' -> 30'}"
        spec = model_config("ae", mnist.shape, code_dim=30, net=net, hidden=channels)
        ae_settings = dataclasses.replace(settings, epochs=mode.ae_epochs, batch_size=mode.ae_batch)
        model, seconds = fit(spec, data, ae_settings, device, seed, out)
        return (
            model,
            seconds,
            {
                "label": label,
                "published_key": "ae",
                "code": 30,
                "settings": f"BCE, Adam 1e-3 cosine, batch {mode.ae_batch}, {epochs(mode.ae_epochs)}",
            },
        )
    objective = "elbo" if key == "vae" else "iwae"
    spec = model_config(
        "vae",
        mnist.shape,
        code_dim=50,
        hidden=(200, 200),
        objective=objective,
        iw_samples=mode.iw_samples,
        binarize=True,
    )
    vae_settings = dataclasses.replace(settings, epochs=mode.vae_epochs, batch_size=mode.vae_batch)
    model, seconds = fit(spec, data, vae_settings, device, seed, out)
    test_binary = binarized(mnist).x_test[: mode.nll_examples]
    estimate = importance_weighted_nll(
        model, test_binary, mode.nll_samples, batch_size=100, max_rows=2**18 if device.type == "cuda" else 2**15
    )
    return (
        model,
        seconds,
        {
            "label": f"{'VAE' if key == 'vae' else f'IWAE k={mode.iw_samples}'} 784-200-200-50",
            "published_key": key,
            "code": 50,
            "settings": f"dynamically binarized, Adam 1e-3 cosine, batch {mode.vae_batch}, {epochs(mode.vae_epochs)}",
            "nll": float(estimate.nll.mean()),
            "nll_samples": mode.nll_samples,
            "nll_examples": len(test_binary),
        },
    )


class SavedRows:
    """The finished models' rows of one mode, kept in a JSON file; settings that differ from the file's start it
    afresh, so one table never mixes settings."""

    def __init__(self, path: Path, mode: Mode, seed: int, log: Log):
        self.path = path
        self.identity = {"mode": dataclasses.asdict(mode), "seed": seed}
        self.rows: dict[str, dict] = {}
        if path.exists():
            saved = json.loads(path.read_text())
            if {key: saved.get(key) for key in self.identity} == self.identity:
                self.rows = saved["rows"]
                log.say(f"kept {', '.join(self.rows) or 'no'} model(s) from {path}")
            else:
                log.say(f"{path} holds other settings: starting afresh")

    def put(self, key: str, row: dict) -> None:
        self.rows[key] = row
        atomic_write(self.path, (json.dumps({**self.identity, "rows": self.rows}, indent=1) + "\n").encode())


def epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def parameters(model: torch.nn.Module) -> int:
    """Learned numbers: the weights, or for PCA its mean and components."""
    return sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())


class Log:
    """Prints progress with the time since the start."""

    def __init__(self):
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {text}", flush=True)


def heading(mode: Mode) -> str:
    return f"### {mode.title} mode"


def section(mode: Mode, saved: dict[str, dict]) -> str:
    """The Markdown of one mode's results: settings, the published figures beside ours, the probes."""
    rows = [saved[key] for key in MODELS if key in saved]

    def distinct(field: str) -> str:
        return ", ".join(dict.fromkeys(str(row[field]) for row in rows))

    lines = [
        heading(mode),
        "",
        f"{distinct('date')}, {distinct('device')}, torch {distinct('torch')}, aekit {distinct('aekit')}; "
        f"wall time {sum(row['wall_seconds'] for row in rows) / 60:.1f} min.",
        "",
    ]
    lines += [f"    {command}" for command in dict.fromkeys(row["command"] for row in rows)]
    lines += [
        "",
        f"Training: {mode.train_examples or 60000} of the 60,000 training images (PCA: all of them); "
        f"auto-encoders {epochs(mode.ae_epochs)} of batch {mode.ae_batch}, "
        f"VAE{f' and IWAE (k={mode.iw_samples})' if 'iwae' in DEFAULT_MODELS[mode.name] + tuple(saved) else ''} "
        f"{epochs(mode.vae_epochs)} of batch {mode.vae_batch}; "
        f"NLL estimated with k={mode.nll_samples} importance samples on "
        f"{mode.nll_examples or 10000} test images binarized once with seed 0.",
        "",
    ]
    compared = []
    for row in rows:
        nll = "nll" in row
        published = PUBLISHED[row["published_key"]]
        if row["published_key"] == "iwae" and mode.iw_samples != 50:
            published = None  # the published IWAE figure is for k=50
        compared.append(
            {
                "what": f"{row['label']}: "
                + (f"NLL (k={row['nll_samples']}), nats" if nll else "squared error per test image"),
                "published": published,
                "ours": row["nll" if nll else "sse_per_example"],
                "seconds": row["train_seconds"],
            }
        )
    for entry in compared:
        published = entry["published"]
        # Published figures are rounded to two decimals: a tie within that rounding counts as reached.
        entry["reached"] = "-" if published is None else "yes" if entry["ours"] <= published + 0.005 else "no"
    lines.append(
        markdown_table(
            compared,
            ["what", "published", "ours", "reached", "seconds"],
            {"published": ".2f", "ours": ".3f", "seconds": ".0f"},
        )
    )
    lines += [
        "Test metrics (probes fitted on the training codes, scored on the test codes; the VAEs on the binarized data):",
        "",
        markdown_table(
            [{"model": row["label"], **row} for row in rows],
            [
                "model",
                "code",
                "sse_per_example",
                "bce_per_example",
                "neg_elbo",
                "knn_accuracy",
                "logreg_accuracy",
                "parameters",
                "settings",
            ],
            {
                "sse_per_example": ".3f",
                "bce_per_example": ".2f",
                "neg_elbo": ".2f",
                "knn_accuracy": ".4f",
                "logreg_accuracy": ".4f",
            },
        ),
    ]
    missed = [entry["what"].split(":")[0] for entry in compared if entry["reached"] == "no"]
    lines.append("Published figures not reached in this run: " + ("; ".join(missed) if missed else "none") + ".")
    absent = [key for key in DEFAULT_MODELS[mode.name] if key not in saved]
    if absent:
        lines += ["", f"Not run in this mode: {', '.join(absent)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
