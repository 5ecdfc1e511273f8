"""The command line: ``aekit train | evaluate | export-projector | compare | pack | demo``.

A user mistake (an :class:`AekitError`, a missing file, a bad option, a write the file system refuses) ends in one
line on stderr and exit status 2; an interrupt ends with 130 after saying how to resume, where there is something to
resume.
"""
from __future__ import annotations

import argparse
import json
import sys

from aekit import distributed
from aekit.codec import MAX_BITS
from aekit.compare import ORDER
from aekit.data import DATASET_NAMES
from aekit.data.files import FORMATS
from aekit.errors import AekitError, TrainingStopped
from aekit.models import MODEL_NAMES, TASKS
from aekit.models.aae import PRIORS
from aekit.models.autoencoders import NOISE_KINDS
from aekit.models.vae import OBJECTIVES
from aekit.projector import MAX_POINTS
from aekit.trainer import DATA_ON, ON_NAN, PRECISIONS, SCHEDULES
from aekit.workflow import DEFAULTS


OUTPUTS = ("OUTPUT is a .npy file (float32, exact), an IDX file (.idx or -ubyte, optionally .gz; 8-bit) or a new "
           "folder of PNG images (named like INPUT's images).")


_NO_STANDARDIZE = ("train on real values as they are; by default each feature of real-valued data (the squared-error "
                   "loss) is standardized by its training-split mean and standard deviation inside the model, and "
                   "results are given back in the data's own units")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,128") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive integer")
    return sizes


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _option(parser, flag: str, help: str, **kwargs) -> None:
    """An option whose absence means 'not given' (None), so a resumed run can tell what the user asked to change."""
    dest = flag.lstrip("-").replace("-", "_")
    default = DEFAULTS[dest]
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    parser.add_argument(flag, dest=dest, default=None, help=f"{help} (default: {shown})", **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (it prints the usage as well by default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aekit", description="Auto-encoders (AE, denoising, dropout, adversarial, "
                                     "variational) and PCA: train, evaluate and compare them, and use their codes "
                                     "to denoise, upscale and compress images.")
    parser.add_argument("--version", action="version", version=f"aekit {__import__('aekit').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model and write its run folder",
                                description="Train a model and write its run folder: config.json, model.safetensors, "
                                "checkpoint.pt, history.csv, metrics.json and figures/.")
    train.add_argument("--out", required=True, help="the run folder to write (or, with --resume, to continue)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint; "
                       "--epochs may be raised, other settings must stay as they were")
    group = train.add_argument_group("data")
    _option(group, "--dataset", f"one of {', '.join(DATASET_NAMES)}, a .npy/.npz/.csv file (one example per row), "
            "a folder of PNG/JPEG images, or a store made by `aekit pack` (it keeps the split it was packed with)")
    _option(group, "--data-dir", "for mnist: a folder holding the four IDX files instead of downloading them")
    _option(group, "--test-fraction", "share of examples held out as the test split where the source has none",
            type=float)
    group = train.add_argument_group("model")
    _option(group, "--model", "the model family", choices=MODEL_NAMES)
    _option(group, "--code-dim", "size of the code", type=int)
    _option(group, "--net", "encoder/decoder: mlp, or conv for images", choices=("mlp", "conv"))
    _option(group, "--hidden", "hidden layer widths (mlp) or channels (conv), comma-separated; default 256,128 for "
            "mlp and 32,64 for conv", type=_sizes)
    _option(group, "--loss", "reconstruction loss: auto (bce for binary-valued data, mse for real-valued), bce or mse",
            choices=("auto", "bce", "mse"))
    group.add_argument("--no-standardize", dest="standardize", action="store_false", default=None,
                       help=_NO_STANDARDIZE)
    _option(group, "--noise", "dae: the corruption", choices=NOISE_KINDS)
    _option(group, "--noise-level", "dae: noise standard deviation (gaussian) or share of elements hit", type=float)
    _option(group, "--dropout", "dropout-ae: dropout rate of the hidden layers", type=float)
    _option(group, "--input-dropout", "dropout-ae: dropout rate of the input", type=float)
    _option(group, "--prior", "aae: the code prior", choices=PRIORS)
    _option(group, "--discriminator-hidden", "aae: discriminator hidden widths, comma-separated", type=_sizes)
    _option(group, "--beta", "vae: weight of the KL term", type=float)
    _option(group, "--objective", "vae: elbo, or iwae (the importance-weighted bound of Burda et al. 2015)",
            choices=OBJECTIVES)
    _option(group, "--iw-samples", "vae with --objective iwae: importance samples per example", type=int)
    _option(group, "--task", "reconstruct the input, or upscale: learn to restore each image from its version "
            "downsampled by --factor (super-resolution; use `aekit upscale` on new images)", choices=TASKS)
    _option(group, "--factor", "upscale: the downsampling factor the model learns to undo, e.g. 2 or 4", type=int)
    _option(group, "--binarize", "train on a fresh Bernoulli draw of the [0, 1] intensities every step (dynamic "
            "binarization) and evaluate on one seeded draw", action="store_true")
    group = train.add_argument_group("training")
    _option(group, "--epochs", "passes over the training split", type=int)
    _option(group, "--batch-size", "examples per step; under torchrun the global batch, split over the processes",
            type=int)
    _option(group, "--lr", "Adam learning rate", type=float)
    _option(group, "--schedule", "learning-rate schedule", choices=SCHEDULES)
    _option(group, "--seed", "seeds the weights, the data order and the train/test split", type=int)
    _option(group, "--log-every", "steps between reads of the running loss", type=int)
    _option(group, "--compile", "run each training step through torch.compile (CUDA graphs on a GPU); pays a "
            "compile time up front", action="store_true")
    _option(group, "--cuda-graph", "capture each training step by hand as a CUDA graph (one process on a GPU; the "
            "alternative to --compile, no compile time)", action="store_true")
    _option(group, "--precision", "fp32, or bf16 autocast for the forward and backward passes", choices=PRECISIONS)
    _option(group, "--on-nan", "when the loss turns NaN or infinite: stop (keeping the last good checkpoint) or skip "
            "that update and count it (checks every step)", choices=ON_NAN)
    _option(group, "--data-on", "where the data lives while training: device (both splits copied there, the fast "
            "path), stream (batches read from the data's arrays, e.g. a memory-mapped store, by a background thread: "
            "data of any size) or auto (device where both splits fit in half of its free memory); may change on "
            "--resume", choices=DATA_ON)
    train.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    train.add_argument("--no-progress", action="store_true", help="print nothing while training")
    train.add_argument("--tensorboard", action="store_true", help="also log the losses and image grids of every "
                       "epoch and the test codes to OUT/tensorboard, for `tensorboard --logdir OUT/tensorboard` "
                       "(needs `pip install aekit[tb]`)")

    evaluate = commands.add_parser("evaluate", help="print and write the test metrics of a run",
                                   description="Compute the metrics of a trained run on its test split, print them "
                                   "as JSON and write them to RUN/metrics.json.")
    evaluate.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")
    evaluate.add_argument("--data-dir", help="for mnist: a folder holding the four IDX files")
    evaluate.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    evaluate.add_argument("--nll-samples", type=int, metavar="K", help="vae: also estimate -log p(x) by importance "
                          "weighting with K samples per test example (nll_is_K, nats; Burda et al. use 5000)")

    projector = commands.add_parser(
        "export-projector", help="write a run's codes for the Embedding Projector",
        description="Write the codes of a run's examples as tensors.tsv, metadata.tsv (label and index), sprite.png "
        "(image data: the examples as thumbnails) and projector_config.pbtxt: view them with `tensorboard --logdir "
        "OUT` (Projector tab), or load the two .tsv files in the standalone projector's Load dialog.")
    projector.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")
    projector.add_argument("--split", choices=("test", "train"), default="test",
                           help="which examples to encode (default: test)")
    projector.add_argument("--max-points", type=int, default=MAX_POINTS,
                           help=f"encode the first N examples of the split (default: {MAX_POINTS})", metavar="N")
    projector.add_argument("--out", help="folder to write (default: RUN/projector)", metavar="DIR")
    projector.add_argument("--data-dir", help="for mnist: a folder holding the four IDX files")
    projector.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")

    compare = commands.add_parser(
        "compare", help="train (or reuse) several models on the same split and compare them",
        description="Train one model of each kind on the same split at the same code size (or reuse finished runs "
        "in --runs), then write OUT/comparison.md and .csv (one row per model, best of each column marked) and "
        "OUT/figures/comparison.png (the same test examples reconstructed by each model); with --code-dims, one "
        "figure per size and OUT/figures/sweep.png (reconstruction error against code size).")
    compare.add_argument("--out", required=True, help="folder to write the comparison to")
    compare.add_argument("--models", type=_names, default=ORDER, help=f"comma-separated (default: {','.join(ORDER)})")
    sizes = compare.add_mutually_exclusive_group()
    sizes.add_argument("--code-dim", type=int, default=10, help="code size (default: 10)")
    sizes.add_argument("--code-dims", type=_sizes, help="several code sizes, comma-separated (a sweep), e.g. "
                       "2,5,10,20,30")
    compare.add_argument("--runs", metavar="DIR", help="folder of run folders: finished runs there with the same "
                         "model, code size, split and given options are reused, the others trained there "
                         "(default: OUT/runs)")
    compare.add_argument("--nll-samples", type=int, metavar="K", help="vae: add the importance-weighted NLL "
                         "estimate with K samples")
    shared = (("--dataset", "the dataset, as for train", {}),
              ("--data-dir", "for mnist: the folder holding the four IDX files", {}),
              ("--test-fraction", "held-out share where the source has no test split", {"type": float}),
              ("--net", "mlp, or conv for images", {"choices": ("mlp", "conv")}),
              ("--hidden", "hidden widths (mlp; 256,128 if not given) or channels (conv; 32,64), comma-separated",
               {"type": _sizes}),
              ("--epochs", "epochs for the neural models", {"type": int}),
              ("--batch-size", "examples per step", {"type": int}),
              ("--lr", "Adam learning rate", {"type": float}),
              ("--schedule", "learning-rate schedule", {"choices": SCHEDULES}),
              ("--seed", "seeds the weights, the data order and the split", {"type": int}))
    for flag, text, kwargs in shared:
        _option(compare, flag, text, **kwargs)
    compare.add_argument("--no-standardize", dest="standardize", action="store_false", default=None,
                         help=_NO_STANDARDIZE)
    compare.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    compare.add_argument("--no-progress", action="store_true", help="print only the result")

    uses = (("denoise", "write a run's reconstructions of noisy examples",
             "Apply a trained (denoising) auto-encoder to the examples in INPUT and write its outputs to OUTPUT.",
             "the examples to denoise: " + FORMATS),
            ("upscale", "write full-size versions of small images",
             "Apply a run trained with --task upscale to the images in INPUT, which must be the run's image size "
             "divided by its factor, and write the full-size images to OUTPUT.", "the small images: " + FORMATS))
    for name, summary, description, source in uses:
        use = commands.add_parser(name, help=summary, description=description + " " + OUTPUTS)
        use.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")
        use.add_argument("input", metavar="INPUT", help=source)
        use.add_argument("--out", required=True, metavar="OUTPUT", help="a .npy file, an IDX file or a new folder")
        use.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    compress = commands.add_parser(
        "compress", help="store examples as their quantized codes",
        description="Encode the examples in INPUT with a trained run and store each code quantized to B bits per "
        "dimension in FILE (a documented binary format with a checksum; see aekit.codec). `aekit decompress` "
        "restores the examples with the same run.")
    compress.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")
    compress.add_argument("input", metavar="INPUT", help="the examples to compress: " + FORMATS)
    compress.add_argument("--bits", type=int, required=True, metavar="B",
                          help=f"bits per code value, 1 to {MAX_BITS}")
    compress.add_argument("--out", required=True, metavar="FILE", help="the compressed file to write")
    compress.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    decompress = commands.add_parser(
        "decompress", help="restore examples from a compressed file",
        description="Decode the codes in FILE (written by `aekit compress` with the same run) and write the "
        "examples to OUTPUT. " + OUTPUTS)
    decompress.add_argument("run", metavar="RUN", help="the run folder that compressed FILE")
    decompress.add_argument("file", metavar="FILE", help="a file written by `aekit compress`")
    decompress.add_argument("--out", required=True, metavar="OUTPUT", help="a .npy file, an IDX file or a new "
                            "folder")
    decompress.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")

    pack = commands.add_parser(
        "pack", help="pack a dataset once into a store: one memory-mapped array and a manifest",
        description="Pack SOURCE (anything --dataset takes, or an IDX file) into the new folder STORE: examples.npy "
        "(uint8 for 8-bit images, else float32; the training split's rows first), labels, the seeded split, "
        "statistics and manifest.json (digests of every file and of the source). `aekit train --dataset STORE` then "
        "reads it memory-mapped, whatever its size. Written atomically; the same source gives the same bytes.")
    pack.add_argument("source", metavar="SOURCE", help="digits, mnist, a .npy/.npz/.csv file, an IDX file (.idx or "
                      "-ubyte, optionally .gz) or a folder of PNG/JPEG images; with --verify, a store")
    pack.add_argument("--out", metavar="STORE", help="the new folder to write the store to")
    pack.add_argument("--workers", type=int, metavar="N", help="processes decoding images (default: the number of "
                      "CPUs)")
    pack.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seeds the train/test split, as train's "
                      f"--seed does (default: {DEFAULTS['seed']})")
    pack.add_argument("--test-fraction", type=float, default=DEFAULTS["test_fraction"], help="share of examples "
                      f"held out as the test split where the source has none (default: {DEFAULTS['test_fraction']})")
    pack.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (listed on stderr and in "
                      "the manifest) instead of refusing the folder")
    pack.add_argument("--data-dir", help="for mnist: a folder holding the four IDX files")
    pack.add_argument("--verify", action="store_true", help="check the store SOURCE, reading every byte (its full "
                      "sha256), instead of packing")
    pack.add_argument("--no-progress", action="store_true", help="print only the result")

    demo = commands.add_parser("demo", help="the main job: PCA, AE and VAE on digits, side by side",
                               description="Train PCA, an auto-encoder and a VAE on scikit-learn's digits at one code "
                               "size; write one figure of the same test digits reconstructed by each and a table of "
                               "their test metrics.")
    demo.add_argument("--out", default="runs/demo", help="folder to write (default: runs/demo)")
    demo.add_argument("--code-dim", type=int, default=10, help="code size (default: 10)")
    demo.add_argument("--epochs", type=int, default=100, help="epochs for the auto-encoders (default: 100)")
    demo.add_argument("--no-progress", action="store_true", help="print only the result")
    return parser


_NOT_COMPARE_OPTIONS = {"command", "out", "models", "code_dim", "code_dims", "runs", "nll_samples", "device",
                        "no_progress"}
_NOT_OPTIONS = {"command", "out", "resume", "device", "no_progress", "tensorboard"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except AekitError as error:
        print(f"aekit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # What aekit's own writes do not already name (they raise StorageError, an AekitError), e.g. a library's.
        print(f"aekit: error: {error.filename or 'a file'}: {error.strerror or error}; check the path, its "
              "permissions and the free space", file=sys.stderr)
        return 2
    except TrainingStopped as stop:
        print(f"aekit: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print(f"aekit: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    else:
        # A rank that tore its gloo group down while another still used it could abort the other (SIGABRT).
        distributed.wait_for_all()
    finally:
        distributed.shutdown()
    return 0


def _run(args: argparse.Namespace) -> None:
    """The command ``args`` name; its result goes to stdout, what was written where to stderr."""
    from aekit import workflow  # the heavy imports wait until the arguments are known to be good

    if args.command == "train":
        given = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS and v is not None}
        _, metrics = workflow.train_run(args.out, given, resume=args.resume, device=args.device,
                                        progress=not args.no_progress, tensorboard=args.tensorboard)
        if distributed.is_main():
            print(json.dumps(metrics, indent=2))
            print(f"run written to {args.out}", file=sys.stderr)
    elif args.command == "evaluate":
        print(json.dumps(workflow.evaluate_run(args.run, data_dir=args.data_dir, device=args.device,
                                               nll_samples=args.nll_samples), indent=2))
    elif args.command == "compare":
        from aekit.compare import compare

        given = {k: v for k, v in vars(args).items() if k not in _NOT_COMPARE_OPTIONS and v is not None}
        print(compare(args.out, models=args.models, code_dims=args.code_dims or (args.code_dim,), options=given,
                      runs_dir=args.runs, nll_samples=args.nll_samples, device=args.device,
                      progress=not args.no_progress))
        print(f"table: {args.out}/comparison.md and comparison.csv, figures: {args.out}/figures/",
              file=sys.stderr)
    elif args.command == "export-projector":
        folder = workflow.export_projector(args.run, args.out, split=args.split, max_points=args.max_points,
                                           data_dir=args.data_dir, device=args.device)
        print(f"projector files written to {folder}; view them with `tensorboard --logdir {folder}`",
              file=sys.stderr)
    elif args.command in ("denoise", "upscale"):
        from aekit import apps

        job = apps.denoise_files if args.command == "denoise" else apps.upscale_files
        n = job(args.run, args.input, args.out, device=args.device)
        print(f"{n} {args.command}d examples written to {args.out}", file=sys.stderr)
    elif args.command == "compress":
        from aekit import apps

        size = apps.compress_files(args.run, args.input, args.bits, args.out, device=args.device)
        print(f"{size} bytes written to {args.out}", file=sys.stderr)
    elif args.command == "decompress":
        from aekit import apps

        n = apps.decompress_files(args.run, args.file, args.out, device=args.device)
        print(f"{n} examples written to {args.out}", file=sys.stderr)
    elif args.command == "pack":
        _pack(args)
    elif args.command == "demo":
        print(workflow.demo(args.out, code_dim=args.code_dim, epochs=args.epochs, progress=not args.no_progress))
        print(f"figure: {args.out}/reconstructions.png, table: {args.out}/results.md", file=sys.stderr)


def _pack(args: argparse.Namespace) -> None:
    """``aekit pack``: a summary of the store to stdout, each image left out by --skip-bad to stderr."""
    if args.verify:
        if args.out is not None:
            raise AekitError(f"--verify checks the store {args.source} and writes nothing; drop --out")
        from aekit.data.store import verify_store

        manifest = verify_store(args.source)
    else:
        if args.out is None:
            raise AekitError("pack needs --out STORE, the new folder to write the store to")
        from aekit.pack import pack

        manifest = pack(args.source, args.out, workers=args.workers, seed=args.seed, test_fraction=args.test_fraction,
                        skip_bad=args.skip_bad, data_dir=args.data_dir, progress=not args.no_progress,
                        on_skip=lambda name, reason: print(f"aekit: skipped {name} ({reason})", file=sys.stderr))
    summary = {key: manifest[key] for key in ("id", "n", "n_train", "n_test", "shape", "dtype", "scale", "skipped")}
    print(json.dumps(summary, indent=2))
    print(f"store {args.source} verified" if args.verify else f"store written to {args.out}", file=sys.stderr)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to go on after an interrupted ``train``: resume where a checkpoint was written, else run it again."""
    if args.command != "train":
        return ""
    from aekit.runs import holds_run

    if holds_run(args.out):
        return f"; continue with `aekit train --resume --out {args.out}`"
    return "; no epoch had finished, so nothing was kept: run the same command again to start over"
