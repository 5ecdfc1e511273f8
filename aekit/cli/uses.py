"""The commands that put a run's codes to use on files: score, denoise, upscale, compress, decompress. Each command is
one builder: it adds the command's parser and attaches its runner, defined beside it, as ``runner``; the runner
imports the work (:mod:`aekit.uses`) only when it runs."""

from __future__ import annotations

import argparse
import json
import sys

from aekit.cli import flags
from aekit.codec import COMPRESSED_SUFFIX, MAX_BITS
from aekit.data.files import FORMATS
from aekit.errors import AekitError
from aekit.evaluation.anomaly import RECONSTRUCTION, SAMPLES, SCORES
from aekit.models.rate_distortion import SEARCH_RATE_SLACK
from aekit.uses.tiles import TILE

# What the commands that write examples (denoise, upscale, decompress) write.
OUTPUTS = (
    "OUTPUT is a .npy file (float32, exact), an IDX file (.idx or -ubyte, optionally .gz; 8-bit) or a new "
    "folder of PNG images (named like INPUT's images)."
)


def score(commands) -> None:
    score = commands.add_parser(
        "score",
        help="write the anomaly score of each example under a run",
        description="Score every example in INPUT by how badly the run's model explains it (higher: more "
        "anomalous), in nats: reconstruction_nll, -log p(x | decoder(encoder(x))) under the run's likelihood; for a "
        "VAE also neg_elbo, the negative ELBO, or nll_is, the importance-weighted estimate of -log p(x). Writes OUT "
        "(a CSV file: index, name for a folder's images, label for a labelled store or table, the score) and the "
        "histogram of the scores beside it (OUT with the suffix .png). Where a table labels anomalies (y beside X in "
        "an .npz file, or a CSV file's column named by --label-column or the run's), prints the scores' AUROC and "
        "AUPRC against them as JSON. A fully convolutional run (rd-ae --net fully-conv) scores images of any size, "
        "each whole: a folder of mixed sizes, one image file or an array of another size.",
    )
    flags.run_argument(score)
    score.add_argument("input", metavar="INPUT", help="the examples to score: " + FORMATS)
    score.add_argument("--out", required=True, metavar="CSV", help="the .csv file to write")
    flags.overwrite(score)
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
    flags.run_option(
        score,
        "label_column",
        shown=False,
        help="the header's name of INPUT's column of anomaly labels (1 and 0), when INPUT is a CSV file: the column "
        "is no value of a row, and the scores are measured against it (default: the run's --label-column, where "
        "INPUT has that column)",
    )
    flags.device(score)
    score.set_defaults(runner=_run_score)


def _run_score(args: argparse.Namespace) -> None:
    from aekit.uses.scoring import histogram_path, score_file

    scored = score_file(
        args.run,
        args.input,
        args.out,
        args.score,
        args.nll_samples,
        device=args.device,
        overwrite=args.overwrite,
        label_column=args.label_column,
    )
    figure = histogram_path(args.out)
    print(f"{len(scored.scores)} scores written to {args.out}, their histogram to {figure}", file=sys.stderr)
    if scored.measures:
        print(json.dumps(scored.measures))


def denoise(commands) -> None:
    _enhancement(
        commands,
        "denoise",
        "write a run's reconstructions of noisy examples",
        "Apply a trained (denoising) auto-encoder to the examples in INPUT and write its outputs to OUTPUT. A run "
        "that takes images of any size (fully convolutional) denoises a folder of images of mixed sizes, or one "
        "image file, each whole at its own size in overlapping tiles, to a new folder of PNGs.",
        "the examples to denoise: " + FORMATS,
    )


def upscale(commands) -> None:
    _enhancement(
        commands,
        "upscale",
        "write full-size versions of small images",
        "Apply a run trained with --task upscale to the images in INPUT, which must be the run's image size "
        "divided by its factor, and write the full-size images to OUTPUT. A run that takes images of any size "
        "upscales a folder of images of mixed sizes, or one image file, each by --factor at its own size in "
        "overlapping tiles, to a new folder of PNGs.",
        "the small images: " + FORMATS,
    )


def _enhancement(commands, name: str, summary: str, description: str, source: str) -> argparse.ArgumentParser:
    """A command that writes a run's outputs for the examples in INPUT (denoise, upscale: :mod:`aekit.uses.enhance`);
    returns its parser."""
    use = commands.add_parser(name, help=summary, description=description + " " + OUTPUTS)
    flags.run_argument(use)
    use.add_argument("input", metavar="INPUT", help=source)
    use.add_argument("--out", required=True, metavar="OUTPUT", help="a .npy file, an IDX file or a new folder")
    flags.overwrite(use)
    if name == "upscale":
        use.add_argument(
            "--factor",
            type=int,
            metavar="F",
            help="upscale by F, one of the factors the run was trained for (red --factors; default: its only one, "
            "required where it has several)",
        )
    use.add_argument(
        "--tile",
        type=int,
        metavar="T",
        help=f"images of any size: take each in tiles of T x T (input) pixels, overlapping by the model's margin, so "
        f"that memory stays bounded; 0: each image whole (default: {TILE} for a model that states its margin, "
        "else whole)",
    )
    flags.device(use)
    use.set_defaults(runner=_run_enhancement)
    return use


def _run_enhancement(args: argparse.Namespace) -> None:
    from aekit.uses import enhance

    options = {"tile": args.tile}
    if args.command == "upscale":
        options["factor"] = args.factor
    job = enhance.denoise_files if args.command == "denoise" else enhance.upscale_files
    n = job(args.run, args.input, args.out, device=args.device, overwrite=args.overwrite, **options)
    print(f"{n} {args.command}d examples written to {args.out}", file=sys.stderr)


def compress(commands) -> None:
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
    flags.run_argument(compress)
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
    flags.overwrite(compress)
    flags.device(compress)
    compress.set_defaults(runner=_run_compress)


def _run_compress(args: argparse.Namespace) -> None:
    from aekit.uses.compress import compress_files

    slack = {}
    if args.search_rate_slack is not None:
        if not args.search:
            raise AekitError("--search-rate-slack bounds the bits of --search's codes; add --search or drop it")
        slack = {"search_rate_slack": args.search_rate_slack}
    size = compress_files(
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


def decompress(commands) -> None:
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
    flags.overwrite(decompress)
    flags.device(decompress)
    decompress.set_defaults(runner=_run_decompress)


def _run_decompress(args: argparse.Namespace) -> None:
    from aekit.uses.compress import decompress_files

    n = decompress_files(args.run, args.file, args.out, device=args.device, overwrite=args.overwrite)
    print(f"{n} examples written to {args.out}", file=sys.stderr)
