"""The commands that make and read runs (train, evaluate, export-projector, export, compare, demo) and pack, which
makes the stores they read. Each command is one builder: it adds the command's parser and attaches its runner,
defined beside it, as ``runner``; the runner imports the work (:mod:`aekit.jobs`, :mod:`aekit.data.store`,
:mod:`aekit.uses.export`) only when it runs."""

from __future__ import annotations

import argparse
import json
import sys

from aekit.cli import flags
from aekit.errors import AekitError
from aekit.models.config import coding_families
from aekit.report.projector import MAX_POINTS
from aekit.training import distributed
from aekit.training.settings import DATA, HOW, LOSS, TRAINING, defaults


def train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model and write its run folder",
        description="Train a model and write its run folder: config.json, model.safetensors, "
        "checkpoint.pt, history.csv, metrics.json and figures/.",
    )
    train.add_argument("--out", required=True, help="the run folder to write (or, with --resume, to continue)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; "
        "--epochs may be raised, --dataset may name where its data moved, other settings must stay as they were",
    )
    flags.run_options(train.add_argument_group("data"), (DATA,))
    group = train.add_argument_group("model")
    flags.model_family(group)
    flags.model_options(group)
    flags.run_options(group, (LOSS,))
    flags.run_options(train.add_argument_group("training"), (TRAINING, HOW))
    flags.device(train, "auto")
    train.add_argument("--no-progress", action="store_true", help="print nothing while training")
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the losses and image grids of every "
        "epoch and the test codes to OUT/tensorboard, for `tensorboard --logdir OUT/tensorboard` "
        "(needs `pip install aekit[tb]`)",
    )
    train.set_defaults(runner=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    _, metrics = workflow.train_run(
        args.out,
        flags.given(args),
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
    )
    if distributed.is_main():
        print(json.dumps(metrics, indent=2))
        print(f"run written to {args.out}", file=sys.stderr)


def evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="print and write the test metrics of a run",
        description="Compute the metrics of a trained run on its test split, print them "
        "as JSON and write them to RUN/metrics.json.",
    )
    flags.run_argument(evaluate)
    flags.new_place(evaluate)
    flags.run_option(evaluate, "data_dir", shown=False)
    flags.device(evaluate)
    evaluate.add_argument(
        "--nll-samples",
        type=int,
        metavar="K",
        help="vae: also estimate -log p(x) by importance "
        "weighting with K samples per test example (nll_is_K, nats; Burda et al. use 5000)",
    )
    evaluate.set_defaults(runner=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    metrics = workflow.evaluate_run(
        args.run, data_dir=args.data_dir, device=args.device, nll_samples=args.nll_samples, dataset=args.dataset
    )
    print(json.dumps(metrics, indent=2))


def export_projector(commands) -> None:
    projector = commands.add_parser(
        "export-projector",
        help="write a run's codes for the Embedding Projector",
        description="Write the codes of a run's examples as tensors.tsv, metadata.tsv (label and index), sprite.png "
        "(image data: the examples as thumbnails) and projector_config.pbtxt: view them with `tensorboard --logdir "
        "OUT` (Projector tab), or load the two .tsv files in the standalone projector's Load dialog.",
    )
    flags.run_argument(projector)
    projector.add_argument(
        "--split", choices=("test", "train"), default="test", help="which examples to encode (default: test)"
    )
    projector.add_argument(
        "--max-points",
        type=int,
        default=MAX_POINTS,
        help=f"encode the first N examples of the split (default: {MAX_POINTS})",
        metavar="N",
    )
    projector.add_argument("--out", help="folder to write (default: RUN/projector)", metavar="DIR")
    flags.new_place(projector)
    flags.overwrite(projector)
    flags.run_option(projector, "data_dir", shown=False)
    flags.device(projector)
    projector.set_defaults(runner=_run_export_projector)


def _run_export_projector(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    folder = workflow.export_projector(
        args.run,
        args.out,
        split=args.split,
        max_points=args.max_points,
        data_dir=args.data_dir,
        device=args.device,
        dataset=args.dataset,
        overwrite=args.overwrite,
    )
    print(f"projector files written to {folder}; view them with `tensorboard --logdir {folder}`", file=sys.stderr)


def export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's encoder and decoder as ONNX graphs, checked against PyTorch",
        description="Write a finished run's encoder and decoder to the new folder DIR as encoder.onnx and "
        "decoder.onnx (any batch size; images of any size for a fully convolutional run; the standardization "
        "inside, so both take and give the data's own units) and export.json (their inputs, outputs, shapes, value "
        "range, the aekit version and the parity figures). Both graphs are run in onnxruntime on the run's test split "
        "(seeded random inputs where its data is not here) and the export is refused if they differ from PyTorch by "
        "more than the tolerance export.json states. Needs `pip install aekit[export]`.",
    )
    flags.run_argument(export)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the graphs' format (default: onnx)")
    export.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    flags.overwrite(export)
    export.set_defaults(runner=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from aekit.uses.export import export_run, largest_difference

    manifest = export_run(args.run, args.out, overwrite=args.overwrite)
    graphs = " and ".join(name for name in ("encoder", "decoder", "restorer") if name in manifest)
    print(
        f"ONNX {graphs} written to {args.out} (largest relative difference from PyTorch "
        f"{largest_difference(manifest):.1g})",
        file=sys.stderr,
    )


def compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="train (or reuse) several models on the same split and compare them",
        description="Train one model of each kind on the same split at the same code size (or reuse finished runs "
        "in --runs), then write OUT/comparison.md and .csv (one row per model, best of each column marked) and "
        "OUT/figures/comparison.png (the same test examples reconstructed by each model); with --code-dims, one "
        "figure per size and OUT/figures/sweep.png (reconstruction error against code size); with --rate-lambdas, "
        "one row per model and rate weight and OUT/figures/rate_distortion.png (squared error against rate). A model "
        "option applies to the families that have it.",
    )
    compare.add_argument("--out", required=True, help="folder to write the comparison to")
    every = ",".join(coding_families())
    compare.add_argument("--models", type=flags.names, help=f"comma-separated (default: {every})")
    sizes = compare.add_mutually_exclusive_group()
    sizes.add_argument("--code-dim", type=int, default=10, help="code size (default: 10)")
    sizes.add_argument(
        "--code-dims", type=flags.sizes, help="several code sizes, comma-separated (a sweep), e.g. 2,5,10,20,30"
    )
    weights = compare.add_mutually_exclusive_group()
    flags.model_option(weights, "rate_lambda")
    weights.add_argument(
        "--rate-lambdas",
        type=flags.numbers,
        help="several rate weights, comma-separated (a sweep of the models that weigh a rate; by default all of "
        "them), e.g. 0.002,0.006,0.015",
    )
    compare.add_argument(
        "--runs",
        metavar="DIR",
        help="folder of run folders: finished runs there with the same "
        "model, code size, rate weight, split and given options are reused, the others trained there "
        "(default: OUT/runs)",
    )
    compare.add_argument(
        "--nll-samples", type=int, metavar="K", help="vae: add the importance-weighted NLL estimate with K samples"
    )
    flags.run_options(compare, (DATA,), helps={"dataset": "the dataset, as for train"})
    flags.model_options(compare, skip=("code_dim", "rate_lambda"))
    flags.run_options(compare, (LOSS, TRAINING))
    flags.device(compare, "auto")
    compare.add_argument("--no-progress", action="store_true", help="print only the result")
    compare.set_defaults(runner=_run_compare)


def _run_compare(args: argparse.Namespace) -> None:
    from aekit.jobs.compare import compare as compare_models

    given = {k: v for k, v in flags.given(args).items() if k != "code_dim"}
    table = compare_models(
        args.out,
        models=args.models,
        code_dims=args.code_dims or (args.code_dim,),
        rate_lambdas=args.rate_lambdas,
        options=given,
        runs_dir=args.runs,
        nll_samples=args.nll_samples,
        device=args.device,
        progress=not args.no_progress,
    )
    print(table)
    print(f"table: {args.out}/comparison.md and comparison.csv, figures: {args.out}/figures/", file=sys.stderr)


def pack(commands) -> None:
    pack = commands.add_parser(
        "pack",
        help="pack a dataset once into a store: one memory-mapped array and a manifest",
        description="Pack SOURCE (anything --dataset takes, or an IDX file) into the new folder STORE: examples.npy "
        "(uint8 for 8-bit images, else float32; the training split's rows first), labels, the seeded split, "
        "statistics and manifest.json (digests of every file and of the source). `aekit train --dataset STORE` then "
        "reads it memory-mapped, whatever its size. A folder of images of mixed sizes keeps each at its own size, "
        "for training with --patch. Written atomically; the same source gives the same bytes.",
    )
    pack.add_argument(
        "source",
        metavar="SOURCE",
        help="digits, mnist, a .npy/.npz/.csv file, an IDX file (.idx or "
        "-ubyte, optionally .gz) or a folder of PNG/JPEG images; with --verify, a store",
    )
    pack.add_argument("--out", metavar="STORE", help="the new folder to write the store to")
    pack.add_argument(
        "--workers", type=int, metavar="N", help="processes decoding images (default: the number of CPUs)"
    )
    pack.add_argument(
        "--seed",
        type=int,
        default=defaults()["seed"],
        help=f"seeds the train/test split, as train's --seed does (default: {defaults()['seed']})",
    )
    flags.run_option(pack, "test_fraction", defaulted=True)
    pack.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave unreadable images and subfolders out (listed on stderr and in the manifest) instead of refusing "
        "the folder",
    )
    flags.run_option(pack, "data_dir", shown=False)
    flags.run_option(pack, "label_column")
    pack.add_argument(
        "--verify",
        action="store_true",
        help="check the store SOURCE, reading every byte (its full sha256), instead of packing",
    )
    pack.add_argument("--no-progress", action="store_true", help="print only the result")
    pack.set_defaults(runner=_run_pack)


def _run_pack(args: argparse.Namespace) -> None:
    """``aekit pack``: a summary of the store to stdout, each image left out by --skip-bad to stderr."""
    if args.verify:
        if args.out is not None:
            raise AekitError(f"--verify checks the store {args.source} and writes nothing; drop --out")
        from aekit.data.store import verify_store

        manifest = verify_store(args.source)
    else:
        if args.out is None:
            raise AekitError("pack needs --out STORE, the new folder to write the store to")
        from aekit.data.store import writer

        manifest = writer.pack(
            args.source,
            args.out,
            workers=args.workers,
            seed=args.seed,
            test_fraction=args.test_fraction,
            skip_bad=args.skip_bad,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            on_skip=lambda name, reason: print(f"aekit: skipped {name} ({reason})", file=sys.stderr),
            label_column=args.label_column,
        )
    summary = {key: manifest[key] for key in ("id", "n", "n_train", "n_test", "shape", "dtype", "scale", "skipped")}
    print(json.dumps(summary, indent=2))
    from aekit.data.store.format import RAGGED

    ragged = " (images of mixed sizes, each kept at its own: train on it with --patch P)"
    done = f"store {args.source} verified" if args.verify else f"store written to {args.out}"
    print(done + ragged * (manifest["version"] == RAGGED), file=sys.stderr)


def demo(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the main job: PCA, AE and VAE on digits, side by side",
        description="Train PCA, an auto-encoder and a VAE on scikit-learn's digits at one code "
        "size; write one figure of the same test digits reconstructed by each and a table of "
        "their test metrics.",
    )
    demo.add_argument("--out", default="runs/demo", help="folder to write (default: runs/demo)")
    demo.add_argument("--code-dim", type=int, default=10, help="code size (default: 10)")
    demo.add_argument("--epochs", type=int, default=100, help="epochs for the auto-encoders (default: 100)")
    demo.add_argument("--no-progress", action="store_true", help="print only the result")
    demo.set_defaults(runner=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    print(workflow.demo(args.out, code_dim=args.code_dim, epochs=args.epochs, progress=not args.no_progress))
    print(f"figure: {args.out}/reconstructions.png, table: {args.out}/results.md", file=sys.stderr)
