"""The command line: ``aekit train | evaluate | score | export-projector | compare | pack | demo`` and the uses of
a run's codes (denoise, upscale, compress, decompress).

A user mistake (an :class:`AekitError`, a missing file, a bad option, a write the file system refuses) ends in one
line on stderr and exit status 2; an interrupt (Ctrl-C, or SIGTERM, which every command takes as it takes Ctrl-C) ends
with 128 + the signal's number (130, 143) after removing what was half written and saying how to resume, where there
is something to resume. The parser is built from the model registry (PyTorch, then); each command imports what it
runs (matplotlib, scikit-learn, the readers) only when it runs: `tests/test_cli.py` checks that building the parser
loads none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from aekit.codec import COMPRESSED_SUFFIX, MAX_BITS
from aekit.data.files import FORMATS
from aekit.errors import AekitError, Interrupted, TrainingStopped
from aekit.evaluation.anomaly import RECONSTRUCTION, SAMPLES, SCORES
from aekit.models import FAMILIES
from aekit.models.config import option_defaults
from aekit.models.rate_distortion import SEARCH_RATE_SLACK
from aekit.report.projector import MAX_POINTS
from aekit.training import distributed
from aekit.training.settings import DATA, HOW, LOSS, TRAINING, declared, defaults, kinds

OUTPUTS = (
    "OUTPUT is a .npy file (float32, exact), an IDX file (.idx or -ubyte, optionally .gz; 8-bit) or a new "
    "folder of PNG images (named like INPUT's images)."
)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,128") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive integer")
    return sizes


def _classes(text: str) -> tuple[str, ...]:
    """Classes as written: names or label numbers, which the data tells apart (aekit.data.dataset.class_numbers)."""
    classes = tuple(part.strip() for part in text.split(","))
    if not all(classes) or len(set(classes)) != len(classes):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of distinct classes (label numbers or names), e.g. 3,5 or cats"
        )
    return classes


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# How an option of each type is read from the command line; a run option's list is one of classes, a model option's
# one of sizes.
_READERS = {
    int: {"type": int},
    float: {"type": float},
    str: {},
    tuple: {"type": _sizes},
    bool: {"action": "store_true"},
}
_RUN_READERS = {**_READERS, tuple: {"type": _classes}}


def _flag(
    parser, f, readers: dict, kind: type, help: str | None = None, defaulted: bool = False, shown: bool = True
) -> None:
    """The flag of the option declared by ``f`` (a model config's field or a run option, :mod:`aekit.training.settings`)
    whose absence means 'not given' (None), so a resumed run can tell what the user asked to change, or with
    ``defaulted`` the option's default; ``shown``: its help says the default. A switch that is on by default is
    turned off by --no-NAME."""
    dashed, help = f.name.replace("_", "-"), help or f.metadata["help"]
    if kind is bool and f.default is True:
        parser.add_argument(f"--no-{dashed}", dest=f.name, action="store_false", default=None, help=help)
        return
    arguments = dict(readers[kind])
    if f.metadata["choices"]:
        arguments["choices"] = f.metadata["choices"]
    if f.metadata.get("metavar"):
        arguments["metavar"] = f.metadata["metavar"]
    if shown:
        help += f" (default: {','.join(map(str, f.default)) if isinstance(f.default, tuple) else f.default})"
    parser.add_argument(f"--{dashed}", dest=f.name, default=f.default if defaulted else None, help=help, **arguments)


def _run_options(parser, groups: tuple[str, ...], helps: dict[str, str] | None = None) -> None:
    """The run options of ``groups`` (:mod:`aekit.training.settings`); ``helps``: help texts of this command's own."""
    types = kinds()
    for f in declared():
        if f.metadata["group"] in groups:
            _flag(parser, f, _RUN_READERS, types[f.name], (helps or {}).get(f.name))


def _run_option(parser, name: str, defaulted: bool = False, shown: bool = True) -> None:
    """The flag of the run option ``name`` alone, e.g. --data-dir for a command that reads a run's data (see
    :func:`_flag` for ``defaulted`` and ``shown``)."""
    f = next(f for f in declared() if f.name == name)
    _flag(parser, f, _RUN_READERS, kinds()[name], defaulted=defaulted, shown=shown)


def _model_options(parser, skip: tuple[str, ...] = ()) -> None:
    """The model families' options (:mod:`aekit.models.config`), each once, named by the families that have it
    where not every family with networks does."""
    owners: dict[str, list] = {}
    for config in FAMILIES.values():
        for f in config.options():
            owners.setdefault(f.name, []).append((config, f))
    for name, having in owners.items():
        if name in skip:
            continue
        config, f = having[0]
        prefix = "" if len(having) > 1 else f"{config.family}: "
        _flag(parser, f, _READERS, config.types()[name], prefix + f.metadata["help"])


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (it prints the usage as well by default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aekit",
        description="Auto-encoders (AE, denoising, dropout, adversarial, "
        "variational) and PCA: train, evaluate and compare them, and use their codes "
        "to denoise, upscale and compress images.",
    )
    parser.add_argument("--version", action="version", version=f"aekit {__import__('aekit').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train, _evaluate, _score, _export_projector, _compare, _uses, _compress, _pack, _demo):
        add(commands)
    return parser


def _device(parser, default: str = "cpu") -> None:
    shown = (
        "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
        if default == "auto"
        else ("cpu (default), auto, cuda, cuda:N or mps")
    )
    parser.add_argument("--device", default=default, help=shown)


def _train(commands) -> None:
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
    _run_options(train.add_argument_group("data"), (DATA,))
    group = train.add_argument_group("model")
    _model_family(group)
    _model_options(group)
    _run_options(group, (LOSS,))
    _run_options(train.add_argument_group("training"), (TRAINING, HOW))
    _device(train, "auto")
    train.add_argument("--no-progress", action="store_true", help="print nothing while training")
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the losses and image grids of every "
        "epoch and the test codes to OUT/tensorboard, for `tensorboard --logdir OUT/tensorboard` "
        "(needs `pip install aekit[tb]`)",
    )


def _model_family(parser) -> None:
    default = option_defaults()["model"]
    parser.add_argument("--model", choices=tuple(FAMILIES), help=f"the model family (default: {default})")


def _overwrite(parser) -> None:
    """The one way to let a command replace an output that exists (every command that writes a file or folder other
    than a new run or store, which it always refuses to write over)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out names where it exists (score: the CSV and the histogram beside it), a file by a "
        "file and a folder by a folder, still whole or not at all; without it an existing output is refused. The "
        "command's own input, run and data are never written over",
    )


def _run_argument(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")


def _new_place(parser) -> None:
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="where the run's data now lies, if it moved: it must be the data the run was trained on, and the run "
        "records the new place",
    )


def _evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="print and write the test metrics of a run",
        description="Compute the metrics of a trained run on its test split, print them "
        "as JSON and write them to RUN/metrics.json.",
    )
    _run_argument(evaluate)
    _new_place(evaluate)
    _run_option(evaluate, "data_dir", shown=False)
    _device(evaluate)
    evaluate.add_argument(
        "--nll-samples",
        type=int,
        metavar="K",
        help="vae: also estimate -log p(x) by importance "
        "weighting with K samples per test example (nll_is_K, nats; Burda et al. use 5000)",
    )


def _score(commands) -> None:
    score = commands.add_parser(
        "score",
        help="write the anomaly score of each example under a run",
        description="Score every example in INPUT by how badly the run's model explains it (higher: more "
        "anomalous), in nats: reconstruction_nll, -log p(x | decoder(encoder(x))) under the run's likelihood; for a "
        "VAE also neg_elbo, the negative ELBO, or nll_is, the importance-weighted estimate of -log p(x). Writes OUT "
        "(a CSV file: index, name for a folder's images, label for a labelled store, the score) and the histogram "
        "of the scores beside it (OUT with the suffix .png). A fully convolutional run (rd-ae --net fully-conv) "
        "scores images of any size, each whole: a folder of mixed sizes, one image file or an array of another size.",
    )
    _run_argument(score)
    score.add_argument("input", metavar="INPUT", help="the examples to score: " + FORMATS)
    score.add_argument("--out", required=True, metavar="CSV", help="the .csv file to write")
    _overwrite(score)
    score.add_argument(
        "--score", choices=SCORES, default=RECONSTRUCTION, help=f"the anomaly score (default: {RECONSTRUCTION})"
    )
    score.add_argument(
        "--nll-samples",
        type=int,
        default=SAMPLES,
        metavar="K",
        help=f"vae: posterior draws per example for neg_elbo and nll_is (default: {SAMPLES})",
    )
    _device(score)


def _export_projector(commands) -> None:
    projector = commands.add_parser(
        "export-projector",
        help="write a run's codes for the Embedding Projector",
        description="Write the codes of a run's examples as tensors.tsv, metadata.tsv (label and index), sprite.png "
        "(image data: the examples as thumbnails) and projector_config.pbtxt: view them with `tensorboard --logdir "
        "OUT` (Projector tab), or load the two .tsv files in the standalone projector's Load dialog.",
    )
    _run_argument(projector)
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
    _new_place(projector)
    _overwrite(projector)
    _run_option(projector, "data_dir", shown=False)
    _device(projector)


def _compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="train (or reuse) several models on the same split and compare them",
        description="Train one model of each kind on the same split at the same code size (or reuse finished runs "
        "in --runs), then write OUT/comparison.md and .csv (one row per model, best of each column marked) and "
        "OUT/figures/comparison.png (the same test examples reconstructed by each model); with --code-dims, one "
        "figure per size and OUT/figures/sweep.png (reconstruction error against code size). A model option "
        "applies to the families that have it.",
    )
    compare.add_argument("--out", required=True, help="folder to write the comparison to")
    every = ",".join(FAMILIES)
    compare.add_argument("--models", type=_names, help=f"comma-separated (default: {every})")
    sizes = compare.add_mutually_exclusive_group()
    sizes.add_argument("--code-dim", type=int, default=10, help="code size (default: 10)")
    sizes.add_argument(
        "--code-dims", type=_sizes, help="several code sizes, comma-separated (a sweep), e.g. 2,5,10,20,30"
    )
    compare.add_argument(
        "--runs",
        metavar="DIR",
        help="folder of run folders: finished runs there with the same "
        "model, code size, split and given options are reused, the others trained there "
        "(default: OUT/runs)",
    )
    compare.add_argument(
        "--nll-samples", type=int, metavar="K", help="vae: add the importance-weighted NLL estimate with K samples"
    )
    _run_options(compare, (DATA,), helps={"dataset": "the dataset, as for train"})
    _model_options(compare, skip=("code_dim",))
    _run_options(compare, (LOSS, TRAINING))
    _device(compare, "auto")
    compare.add_argument("--no-progress", action="store_true", help="print only the result")


def _uses(commands) -> None:
    uses = (
        (
            "denoise",
            "write a run's reconstructions of noisy examples",
            "Apply a trained (denoising) auto-encoder to the examples in INPUT and write its outputs to OUTPUT.",
            "the examples to denoise: " + FORMATS,
        ),
        (
            "upscale",
            "write full-size versions of small images",
            "Apply a run trained with --task upscale to the images in INPUT, which must be the run's image size "
            "divided by its factor, and write the full-size images to OUTPUT.",
            "the small images: " + FORMATS,
        ),
    )
    for name, summary, description, source in uses:
        use = commands.add_parser(name, help=summary, description=description + " " + OUTPUTS)
        _run_argument(use)
        use.add_argument("input", metavar="INPUT", help=source)
        use.add_argument("--out", required=True, metavar="OUTPUT", help="a .npy file, an IDX file or a new folder")
        _overwrite(use)
        _device(use)


def _compress(commands) -> None:
    compress = commands.add_parser(
        "compress",
        help="store examples as their quantized codes",
        description="Encode the examples in INPUT with a trained run and store each code quantized to B bits per "
        "dimension (a run with a codebook: its codebook indices, log2 of its size bits each; a rate-distortion run, "
        "rd-ae: its integer codes entropy-coded under its learned prior, so the bytes follow the content) in FILE (a "
        "documented binary format with a checksum; see aekit.codec). A fully convolutional rate-distortion run "
        "(--net fully-conv) codes a folder of images of any sizes, or one image file, each whole at its own size. "
        "`aekit decompress` restores the examples with the same run.",
    )
    _run_argument(compress)
    compress.add_argument("input", metavar="INPUT", help="the examples to compress: " + FORMATS)
    compress.add_argument(
        "--bits",
        type=int,
        metavar="B",
        help=f"bits per code value, 1 to {MAX_BITS}; not for a run with a codebook (vqvae), whose indices are "
        "stored losslessly, nor for a rate-distortion run (rd-ae), whose codes are entropy-coded",
    )
    compress.add_argument(
        "--search",
        action="store_true",
        help="rate-distortion runs (rd-ae, not fully convolutional): choose each example's integer code by a greedy "
        "search that lowers the run's own loss (distortion + lambda x bits) below rounding's, one value +-1 at a "
        "time, each code within --search-rate-slack of its rounded code's bits: a lower error at about the same "
        "bytes (on MNIST, 30 epochs, unbounded: 14 to 31%% fewer bytes at the same error), hundreds of times "
        "slower; decompressing is unchanged",
    )
    compress.add_argument(
        "--search-rate-slack",
        type=float,
        metavar="S",
        help="with --search: each example's code may take at most 1 + S times the bits of its rounded code, so the "
        f"file grows by at most about S (default: {SEARCH_RATE_SLACK}); a larger S buys a lower error with more "
        "bytes, inf lets the run's loss alone decide",
    )
    compress.add_argument(
        "--out", required=True, metavar="FILE", help=f"the compressed file to write, named *{COMPRESSED_SUFFIX}"
    )
    _overwrite(compress)
    _device(compress)
    decompress = commands.add_parser(
        "decompress",
        help="restore examples from a compressed file",
        description="Decode the codes in FILE (written by `aekit compress` with the same run) and write the "
        "examples to OUTPUT; a .npy OUTPUT has the layout compress was given (flat rows, (n, height, width), "
        "channels last, ...). " + OUTPUTS,
    )
    decompress.add_argument("run", metavar="RUN", help="the run folder that compressed FILE")
    decompress.add_argument("file", metavar="FILE", help="a file written by `aekit compress`")
    decompress.add_argument(
        "--out",
        required=True,
        metavar="OUTPUT",
        help="a .npy file, an IDX file or a new folder (of PNGs: images of several sizes need one; images "
        "compressed from a folder or an image file come back under their names, photo.jpg as photo.png)",
    )
    _overwrite(decompress)
    _device(decompress)


def _pack(commands) -> None:
    pack = commands.add_parser(
        "pack",
        help="pack a dataset once into a store: one memory-mapped array and a manifest",
        description="Pack SOURCE (anything --dataset takes, or an IDX file) into the new folder STORE: examples.npy "
        "(uint8 for 8-bit images, else float32; the training split's rows first), labels, the seeded split, "
        "statistics and manifest.json (digests of every file and of the source). `aekit train --dataset STORE` then "
        "reads it memory-mapped, whatever its size. Written atomically; the same source gives the same bytes.",
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
    _run_option(pack, "test_fraction", defaulted=True)
    pack.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave unreadable images and subfolders out (listed on stderr and in the manifest) instead of refusing "
        "the folder",
    )
    _run_option(pack, "data_dir", shown=False)
    pack.add_argument(
        "--verify",
        action="store_true",
        help="check the store SOURCE, reading every byte (its full sha256), instead of packing",
    )
    pack.add_argument("--no-progress", action="store_true", help="print only the result")


def _demo(commands) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _terminated_as_interrupted():
            _run(args)
    except AekitError as error:
        print(f"aekit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # What aekit's own writes do not already name (they raise StorageError, an AekitError), e.g. a library's.
        print(
            f"aekit: error: {error.filename or 'a file'}: {error.strerror or error}; check the path, its "
            "permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except TrainingStopped as stop:
        print(f"aekit: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt as interrupt:
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
        print(f"aekit: interrupted{by}{_resume_hint(args)}", file=sys.stderr)
        return 128 + number
    else:
        # A rank that tore its gloo group down while another still used it could abort the other (SIGABRT).
        distributed.wait_for_all()
    finally:
        distributed.shutdown()
    return 0


@contextlib.contextmanager
def _terminated_as_interrupted():
    """SIGTERM (what `timeout`, schedulers and `docker stop` send) interrupts the command inside the block as Ctrl-C
    does, so that it removes what it half wrote (training stops after a checkpoint on either, by itself)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(number: int, frame) -> None:
    raise Interrupted(number)


def _run(args: argparse.Namespace) -> None:
    """The command ``args`` name; its result goes to stdout, what was written where to stderr."""
    {
        "train": _run_train,
        "evaluate": _run_evaluate,
        "score": _run_score,
        "compare": _run_compare,
        "export-projector": _run_export_projector,
        "denoise": _run_use,
        "upscale": _run_use,
        "compress": _run_compress,
        "decompress": _run_decompress,
        "pack": _run_pack,
        "demo": _run_demo,
    }[args.command](args)


def _given(args: argparse.Namespace) -> dict:
    """The run options (see :func:`aekit.options.defaults`) the command line gave."""
    known = defaults()
    return {k: v for k, v in vars(args).items() if k in known and v is not None}


def _run_train(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    _, metrics = workflow.train_run(
        args.out,
        _given(args),
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
    )
    if distributed.is_main():
        print(json.dumps(metrics, indent=2))
        print(f"run written to {args.out}", file=sys.stderr)


def _run_evaluate(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    metrics = workflow.evaluate_run(
        args.run, data_dir=args.data_dir, device=args.device, nll_samples=args.nll_samples, dataset=args.dataset
    )
    print(json.dumps(metrics, indent=2))


def _run_score(args: argparse.Namespace) -> None:
    from aekit.uses.scoring import histogram_path, score_file

    scores = score_file(
        args.run, args.input, args.out, args.score, args.nll_samples, device=args.device, overwrite=args.overwrite
    )
    figure = histogram_path(args.out)
    print(f"{len(scores)} scores written to {args.out}, their histogram to {figure}", file=sys.stderr)


def _run_compare(args: argparse.Namespace) -> None:
    from aekit.jobs.compare import compare

    given = {k: v for k, v in _given(args).items() if k != "code_dim"}
    table = compare(
        args.out,
        models=args.models,
        code_dims=args.code_dims or (args.code_dim,),
        options=given,
        runs_dir=args.runs,
        nll_samples=args.nll_samples,
        device=args.device,
        progress=not args.no_progress,
    )
    print(table)
    print(f"table: {args.out}/comparison.md and comparison.csv, figures: {args.out}/figures/", file=sys.stderr)


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


def _run_use(args: argparse.Namespace) -> None:
    from aekit.uses import enhance

    job = enhance.denoise_files if args.command == "denoise" else enhance.upscale_files
    n = job(args.run, args.input, args.out, device=args.device, overwrite=args.overwrite)
    print(f"{n} {args.command}d examples written to {args.out}", file=sys.stderr)


def _run_compress(args: argparse.Namespace) -> None:
    from aekit.uses import compress

    slack = {}
    if args.search_rate_slack is not None:
        if not args.search:
            raise AekitError("--search-rate-slack bounds the bits of --search's codes; add --search or drop it")
        slack = {"search_rate_slack": args.search_rate_slack}
    size = compress.compress_files(
        args.run,
        args.input,
        args.bits,
        args.out,
        device=args.device,
        search=args.search,
        overwrite=args.overwrite,
        **slack,
    )
    print(f"{size} bytes written to {args.out}", file=sys.stderr)


def _run_decompress(args: argparse.Namespace) -> None:
    from aekit.uses import compress

    n = compress.decompress_files(args.run, args.file, args.out, device=args.device, overwrite=args.overwrite)
    print(f"{n} examples written to {args.out}", file=sys.stderr)


def _run_demo(args: argparse.Namespace) -> None:
    from aekit.jobs import workflow

    print(workflow.demo(args.out, code_dim=args.code_dim, epochs=args.epochs, progress=not args.no_progress))
    print(f"figure: {args.out}/reconstructions.png, table: {args.out}/results.md", file=sys.stderr)


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
        from aekit.data.store.writer import pack

        manifest = pack(
            args.source,
            args.out,
            workers=args.workers,
            seed=args.seed,
            test_fraction=args.test_fraction,
            skip_bad=args.skip_bad,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            on_skip=lambda name, reason: print(f"aekit: skipped {name} ({reason})", file=sys.stderr),
        )
    summary = {key: manifest[key] for key in ("id", "n", "n_train", "n_test", "shape", "dtype", "scale", "skipped")}
    print(json.dumps(summary, indent=2))
    print(f"store {args.source} verified" if args.verify else f"store written to {args.out}", file=sys.stderr)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to go on after an interrupted ``train``: resume where a checkpoint was written, else run it again."""
    if args.command != "train":
        return ""
    from aekit.training.run_folder import holds_run

    if holds_run(args.out):
        return f"; continue with `aekit train --resume --out {args.out}`"
    return "; no epoch had finished, so nothing was kept: run the same command again to start over"
