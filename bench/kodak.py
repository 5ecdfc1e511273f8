"""The Kodak benchmark of the learned photo codecs (issue 30): bits per pixel against PSNR and MS-SSIM on the 24
Kodak photos for aekit's runs, JPEG, WebP and AVIF through Pillow, CompressAI's architectures trained alike, and
CompressAI's published Kodak points; written to bench/RESULTS.md ("## Photo compression: Kodak"), every point to
bench/results/kodak.json, the curves to bench/figures/kodak_rd.png.

Conventions (the data README's): each photo coded as its own file, headers counted; bits per pixel = file bits /
(width x height) and PSNR over the RGB channels (peak 255), each the mean over the photos; every decoding rounded
to 8-bit pixels first (what a decoded file gives), MS-SSIM by ``pytorch_msssim.ms_ssim`` (what CompressAI's
evaluation uses) on [0, 1] RGB, data range 1. Encode and decode seconds per photo are the wall clock on
``--threads`` threads (torch's, and AVIF's), after one photo coded untimed (the first call's set-up).

- aekit: a run folder (``--runs``) of a model that codes photos whole (``--model hyperprior``, a fully
  convolutional ``rd-ae``, ...), through the library as ``aekit compress RUN photo.png`` would: one compressed file
  (:func:`aekit.uses.compress.compress_images`) per photo; the method is ``aekit <family>``, the setting its lambda.
  The one file of all 24 photos is measured too (``bpp_one_file``).
- CompressAI trained alike (``--peers``): a folder of ``train-peer`` (below). Its ``compress()`` on each photo padded
  with zeros to a multiple of 64 (as CompressAI's evaluation pads), the decoding cut back; bytes: its strings, each
  with its length (a varint), and the photo's height and width (4 bytes), from which the latent shapes follow.
- The published rows: CompressAI's Kodak results as the data README lists them (no MS-SSIM there).

Each invocation replaces the points it measures (by method and setting) in the JSON and keeps the others, so the
peers can be measured from CompressAI's venv and the rest from the project's:

    python -m bench.kodak --kodak ../shared/data/photos/kodak --runs RUN [RUN ...]
    ../venv-compressai/bin/python -m bench.kodak --kodak ../shared/data/photos/kodak --no-codecs --peers DIR ...

A CompressAI model trained alike (from CompressAI's venv, where aekit is installed ``--no-deps``: bench/compress.py):

    ../venv-compressai/bin/python -m bench.kodak train-peer --arch hyperprior --like RUN --out DIR

``compressai.models.ScaleHyperprior(N, M)`` or ``FactorizedPrior(N, M)``, N, M and lambda (``--lambda``, default the
run's), epochs, patches per epoch, batch size, lr, schedule, seed, patch size and data read from the aekit run's
config.json (crops of a size not a multiple of 64 padded with zeros to one, the loss on their own pixels). The
crops are the run's very crops in its order: aekit's own patch source (:class:`aekit.training.batches.PatchSource`),
its draw seeded as the trainer seeds it (:func:`run_crops`). The objective is aekit's (``--loss mse``): the sum of
squared differences of a crop's [0, 1] values + lambda x the bits of its codes (both codes for the hyperprior), the
mean over the batch; Adam at the run's lr on the trainer's cosine schedule over every step, no gradient clipping
(aekit clips none). CompressAI's entropy bottleneck also fits its quantiles on its aux loss with an Adam of its own
(lr 1e-3, as CompressAI's example trainer), so that its ``compress()`` works; the noise draws and the initial
weights are CompressAI's own. It writes ``model.pt`` (the state dict after ``update()``) and
``peer.json`` (its settings and training seconds).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import aekit
from aekit.errors import AekitError
from aekit.evaluation.measures import psnr
from aekit.naming import flag
from aekit.report.plots import markdown_table
from aekit.training.settings import defaults, older_run_defaults
from aekit.training.trainer import learning_rate_factor
from aekit.uses.compress import compress_images, decompress_images
from bench.codecs import QUALITIES, bd_rate, decoded, encoded, overlap
from bench.compress import CODECS, pillow_versions
from bench.compressai_peer import missing, padded, unpadded, varint_bytes
from bench.mnist_runs import RESULTS, merge_json, write_section

HEADING = "## Photo compression: Kodak"
JSON_NAME, FIGURE_NAME = "kodak.json", "kodak_rd.png"
# CompressAI's published Kodak results, as the data README lists them: (bpp, PSNR) points.
PUBLISHED = {
    "JPEG (Pillow), published by CompressAI": ((0.221, 23.78), (0.327, 26.58), (0.508, 29.04), (0.786, 31.31)),
    "bmshj2018-factorized, published": ((0.123, 26.91), (0.288, 29.62), (0.648, 32.96)),
    "bmshj2018-hyperprior, published": ((0.131, 27.58), (0.320, 30.97), (0.669, 34.53)),
}
# JPEG as Pillow writes it when asked for nothing but a quality (standard Huffman tables): the JPEG of CompressAI's
# published curve; the curve "JPEG" has its optimized tables (bench/codecs.py), 10-35% fewer bytes at low qualities.
PLAIN_JPEG = "JPEG, Pillow's defaults"
# The curves every other is measured against.
REFERENCES = ("JPEG", PLAIN_JPEG, "WebP")
# CompressAI's architectures: the class, and the multiple its evaluation pads images to.
ARCHITECTURES = {"hyperprior": ("ScaleHyperprior", 64), "factorized": ("FactorizedPrior", 64)}
# A curve's name: the family and how it was trained (:func:`training_label`); runs trained otherwise (for longer,
# say) are not points of the same curve.
AEKIT_METHOD, PEER_METHOD = "aekit {arch}, {training}", "CompressAI {arch}, {training} (trained alike)"
# What a peer's file holds besides its strings: the photo's height and width (two uint16).
SIZE_BYTES = 4
MODEL_FILE, PEER_FILE = "model.pt", "peer.json"
# The aux loss's Adam (CompressAI's example trainer).
AUX_LR = 1e-3
# pytorch_msssim's 5 scales of an 11 x 11 window need a shorter side above (11 - 1) x 2^4.
MS_SSIM_SIDE = 160


class BenchError(AekitError):
    """A benchmark input that cannot be used as given."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["train-peer"]:
            return train_peer(peer_arguments(argv[1:]))
        return evaluate(arguments(argv))
    except AekitError as error:
        print(f"kodak: error: {error}", file=sys.stderr)
        return 2


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kodak", type=Path, required=True, help="the folder of the Kodak photos (PNG)")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="aekit run folders")
    parser.add_argument("--peers", type=Path, nargs="*", default=[], help="folders written by train-peer")
    parser.add_argument("--no-codecs", action="store_true", help="leave Pillow's codecs as the JSON has them")
    parser.add_argument("--limit", type=int, help="the first N photos only (a quick check)")
    parser.add_argument("--threads", type=int, default=1, help="torch's and AVIF's threads (1: the machine is shared)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file whose section is rewritten")
    return parser.parse_args(argv)


def peer_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kodak train-peer", description="CompressAI trained alike")
    parser.add_argument("--arch", choices=ARCHITECTURES, required=True)
    parser.add_argument("--like", type=Path, required=True, help="the aekit run whose settings and crops it takes")
    parser.add_argument("--lambda", dest="rate_lambda", type=float, help="default: the run's")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for model.pt and peer.json")
    parser.add_argument("--max-steps", type=int, help="stop after N steps (a timing check)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------------------------------------- photos


def read_photos(folder: Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """The photos of ``folder`` by file name, (h, w, 3) uint8, in name order."""
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    if not files:
        raise BenchError(f"{folder}: no photos; give --kodak the kodak folder of the shared data")
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in files[:limit]}


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 as (1, 3, h, w) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None] / 255


def as_pixels(x) -> np.ndarray:
    """A decoding in [0, 1], (3, h, w) or (1, 3, h, w), as the (h, w, 3) uint8 pixels a decoded file gives."""
    x = np.asarray(x, np.float32).reshape(-1, *np.shape(x)[-3:])[0]
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def ms_ssim(back: np.ndarray, clean: np.ndarray) -> float | None:
    """MS-SSIM of two (h, w, 3) uint8 photos on [0, 1] (``pytorch_msssim``, data range 1); None for a photo too small
    for its five scales."""
    from pytorch_msssim import ms_ssim as measure

    if min(clean.shape[:2]) <= MS_SSIM_SIDE:
        return None
    return float(measure(as_tensor(back), as_tensor(clean), data_range=1.0))


def quality(backs: list[np.ndarray], photos: dict[str, np.ndarray]) -> dict:
    """Mean PSNR (dB, peak 255, over the RGB channels) and MS-SSIM (None where a photo is too small) over the
    photos."""
    cleans = list(photos.values())
    each = [ms_ssim(b, c) for b, c in zip(backs, cleans, strict=True)]
    return {
        "psnr": round(float(np.mean([psnr(b[None] / 255.0, c[None] / 255.0) for b, c in zip(backs, cleans)])), 4),
        "ms_ssim": None if None in each else round(float(np.mean(each)), 5),
    }


def point(method: str, setting: str, sizes: list[int], backs, photos: dict, seconds, **extra) -> dict:
    """A point of a curve: the mean over photos of each one's bits per pixel, its quality and the encode and decode
    seconds per photo (``seconds``: each photo's (encode, decode))."""
    bpp = np.mean([8 * n / (p.shape[0] * p.shape[1]) for n, p in zip(sizes, photos.values(), strict=True)])
    times = np.mean(seconds, axis=0)
    return {
        "method": method,
        "setting": setting,
        "bpp": round(float(bpp), 5),
        **quality(backs, photos),
        "encode_s": round(float(times[0]), 5),
        "decode_s": round(float(times[1]), 5),
        "photos": len(photos),
        **extra,
    }


def timed(function, *args):
    begin = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - begin


# ---------------------------------------------------------------------------------------------------------- codecs


def codec_points(photos: dict[str, np.ndarray]) -> list[dict]:
    """JPEG (also with Pillow's defaults), WebP and AVIF at every quality of :data:`bench.codecs.QUALITIES`, each
    photo its own file."""
    points = []
    codecs = [(kind, name, None) for kind, name in CODECS.items()] + [("JPEG", PLAIN_JPEG, {})]
    for kind, name, options in codecs:
        for q in QUALITIES[kind]:
            sizes, backs, seconds = [], [], []
            for pixels in photos.values():
                data, encode_s = timed(encoded, pixels, kind, q, options)
                back, decode_s = timed(decoded, data, "RGB")
                sizes.append(len(data)), backs.append(back), seconds.append((encode_s, decode_s))
            points.append(point(name, f"q{q}", sizes, backs, photos, seconds))
        say(f"{name}: " + ", ".join(f"{p['setting']} {p['bpp']:.3f} bpp {p['psnr']:.2f} dB" for p in points[-3:]))
    return points


# ------------------------------------------------------------------------------------------------------ aekit runs


def run_summary(run: Path) -> dict:
    """What a run folder says of itself: its family, lambda, training command (the options that differ from the
    defaults) and hours (its history's epoch seconds)."""
    config_path = run / "config.json"
    if not config_path.is_file():
        raise BenchError(f"{run}: not a run folder (no config.json); pass the --out folder of `aekit train`")
    config = json.loads(config_path.read_text())
    options, model = config.get("options", {}), config["model"]
    default = defaults()
    given = [flag(k, v) for k, v in options.items() if k != "model" and k in default and v != default[k]]
    seconds = 0.0
    if (run / "history.csv").is_file():
        with open(run / "history.csv", newline="") as handle:
            seconds = sum(float(record["seconds"]) for record in csv.DictReader(handle))
    return {
        "family": model["model"],
        "rate_lambda": model.get("rate_lambda"),
        "epochs": options.get("epochs"),
        "warmup_steps": trained_with(options, "warmup_steps"),
        "clip_grad_norm": trained_with(options, "clip_grad_norm"),
        "training": f"aekit train --model {model['model']} " + " ".join(given),
        "train_hours": round(seconds / 3600, 3),
    }


def trained_with(options: dict, key: str):
    """A run's (or a peer's) training option ``key``: as recorded, or what runs made before it existed had."""
    return options.get(key, {**defaults(), **older_run_defaults()}[key])


def training_label(epochs: int, warmup_steps: int, clip_grad_norm: float) -> str:
    """How a curve's models were trained, in its name: "12 epochs", or "12 epochs, 256 warm-up steps, clipped at
    100" (the gradient's norm)."""
    warm_up = f", {warmup_steps} warm-up steps" if warmup_steps else ""
    return f"{epochs} epochs{warm_up}" + (f", clipped at {clip_grad_norm:g}" if clip_grad_norm else "")


def aekit_point(run: Path, photos: dict[str, np.ndarray]) -> dict:
    """A run's point: each photo its own compressed file, timed; and the bytes of one file of all the photos."""
    summary = run_summary(run)
    model = aekit.load(run)
    images = [as_tensor(p)[0].numpy() for p in photos.values()]
    decompress_images(model, compress_images(model, images[:1]))  # set-up (tables) outside the times
    sizes, backs, seconds = [], [], []
    for image in images:
        data, encode_s = timed(compress_images, model, [image])
        back, decode_s = timed(decompress_images, model, data)
        sizes.append(len(data)), backs.append(as_pixels(back[0])), seconds.append((encode_s, decode_s))
    pixels = sum(p.shape[0] * p.shape[1] for p in photos.values())
    one_file = 8 * len(compress_images(model, images)) / pixels
    return point(
        AEKIT_METHOD.format(
            arch=summary["family"],
            training=training_label(summary["epochs"], summary["warmup_steps"], summary["clip_grad_norm"]),
        ),
        f"lambda {summary['rate_lambda']}",
        sizes,
        backs,
        photos,
        seconds,
        bpp_one_file=round(one_file, 5),
        run=str(run),
        training=summary["training"],
        train_hours=summary["train_hours"],
    )


# ------------------------------------------------------------------------------------------ CompressAI trained alike


def peer_model(arch: str, n: int, m: int) -> torch.nn.Module:
    import compressai.models

    return getattr(compressai.models, ARCHITECTURES[arch][0])(n, m)


def peer_rate_bits(likelihoods: dict) -> torch.Tensor:
    """The bits of each crop's codes (all of them: y, and z for the hyperprior) under the model's likelihoods."""
    return sum(-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values())


def run_crops(options: dict, dataset) -> tuple[int, Iterator[torch.Tensor]]:
    """The steps of an aekit run's training (its config.json ``options``, on its ``dataset``) and each step's batch of
    crops in [0, 1], the very crops in the very order its trainer drew them: aekit's patch source, its draw seeded as
    :mod:`aekit.training.trainer` seeds it (one process)."""
    from aekit.models.base import float_batch
    from aekit.training.batches import PatchSource

    source = PatchSource(dataset, torch.device("cpu"), options["batch_size"], 0, 1, False, options["patches_per_epoch"])
    generator = torch.Generator().manual_seed(options["seed"])  # the trainer's data order

    def batches():
        for _ in range(options["epochs"]):
            for inputs in source.batches(source.order(generator), 0):
                yield float_batch(inputs)

    return options["epochs"] * source.steps_per_epoch, batches()


def like_run(run: Path) -> tuple[dict, dict, object]:
    """An aekit run's config.json options and model section, and its data (checked against the data it records)."""
    from aekit.data.identity import data_identity
    from aekit.jobs.workflow import load_data

    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else None
    if config is None or not config.get("options", {}).get("patch"):
        raise BenchError(f"{run}: not a run folder of patch training (--patch); pass one of aekit's photo codecs")
    options = config["options"]
    dataset = load_data(options)
    recorded = config.get("data", {}).get("sha256")
    if recorded is not None and data_identity(dataset)["sha256"] != recorded:
        raise BenchError(f"{options['dataset']} is not the data {run} was trained on; point the run at it")
    return options, config["model"], dataset


def train_peer(args: argparse.Namespace) -> int:
    """Train CompressAI's ``--arch`` as the aekit run ``--like`` was trained (the module's docstring)."""
    why = missing()
    if why:
        raise BenchError(f"CompressAI does not import here ({why}); run train-peer from CompressAI's venv")
    if (args.out / MODEL_FILE).exists():
        raise BenchError(f"{args.out / MODEL_FILE} exists; give a new --out")
    torch.set_num_threads(args.threads)
    options, spec, dataset = like_run(args.like)
    rate_lambda = spec["rate_lambda"] if args.rate_lambda is None else args.rate_lambda
    n, m = spec["channels"], spec["code_dim"]
    total, batches = run_crops(options, dataset)
    per_epoch = total // options["epochs"]
    torch.manual_seed(options["seed"])
    model, multiple = peer_model(args.arch, n, m), ARCHITECTURES[args.arch][1]
    aux = [p for name, p in model.named_parameters() if name.endswith(".quantiles")]
    main_parameters = [p for name, p in model.named_parameters() if not name.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main_parameters, options["lr"]), torch.optim.Adam(aux, AUX_LR)
    # The trainer's factor of the learning rate, stepped after each step, and its clipping of the gradient (neither
    # in runs made before they existed).
    warmup, clip = trained_with(options, "warmup_steps"), trained_with(options, "clip_grad_norm")
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total, options["schedule"], warmup)
    )
    say(f"{ARCHITECTURES[args.arch][0]}(N={n}, M={m}), lambda {rate_lambda}: {total} steps")
    model.train()
    started, step, sums = time.perf_counter(), 0, np.zeros(3)
    for x in batches:
        out = model(padded(x, multiple))
        distortion = (unpadded(out["x_hat"], *x.shape[-2:], multiple) - x).pow(2).flatten(1).sum(1).mean()
        rate = peer_rate_bits(out["likelihoods"]).mean()
        loss = distortion + rate_lambda * rate
        optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(main_parameters, clip)
        optimizer.step()
        schedule.step()
        aux_optimizer.zero_grad()
        model.aux_loss().backward()
        aux_optimizer.step()
        sums += (loss.item(), distortion.item(), rate.item())
        step += 1
        if step % per_epoch == 0 or step == args.max_steps:
            loss, distortion, rate = sums / (step - (step - 1) // per_epoch * per_epoch)
            say(f"epoch {(step - 1) // per_epoch + 1}: loss {loss:.2f} = {distortion:.2f} + lambda x {rate:.1f} bits")
            sums[:] = 0
        if step == args.max_steps:
            break
    seconds = time.perf_counter() - started
    model.update(force=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / MODEL_FILE)
    import compressai

    settings = {
        "arch": args.arch, "N": n, "M": m, "rate_lambda": rate_lambda, "like": str(args.like), "steps": step,
        **{key: options[key] for key in ("epochs", "patches_per_epoch", "batch_size", "lr", "schedule", "seed")},
        "warmup_steps": warmup, "clip_grad_norm": clip,
        "patch": options["patch"], "dataset": options["dataset"],
        "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(step, 1), 4),
        "threads": args.threads, "compressai": compressai.__version__, "torch": torch.__version__,
    }  # fmt: skip
    (args.out / PEER_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    say(f"{step} steps in {seconds:.1f} s ({seconds / max(step, 1):.3f} s a step): {args.out}")
    return 0


def peer_settings(folder: Path) -> dict:
    if not (folder / PEER_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise BenchError(f"{folder}: no {PEER_FILE} and {MODEL_FILE}; pass a folder of `bench.kodak train-peer`")
    return json.loads((folder / PEER_FILE).read_text())


def peer_point(folder: Path, photos: dict[str, np.ndarray]) -> dict:
    """A peer's point: its ``compress()`` of each photo padded to a multiple of 64, timed, and the decoding cut
    back; bytes: its strings, each with its length, and the photo's size."""
    settings = peer_settings(folder)
    model = peer_model(settings["arch"], settings["N"], settings["M"])
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu"))
    model.eval().update(force=True)
    multiple = ARCHITECTURES[settings["arch"]][1]

    @torch.no_grad()
    def code(pixels: np.ndarray):
        x = padded(as_tensor(pixels), multiple)
        stored, encode_s = timed(model.compress, x)
        back, decode_s = timed(model.decompress, stored["strings"], stored["shape"])
        strings = [s[0] for s in stored["strings"]]
        size = SIZE_BYTES + sum(len(s) + varint_bytes(len(s)) for s in strings)
        return size, as_pixels(unpadded(back["x_hat"], *pixels.shape[:2], multiple)), (encode_s, decode_s)

    code(next(iter(photos.values())))  # set-up outside the times
    sizes, backs, seconds = zip(*(code(p) for p in photos.values()))
    return point(
        PEER_METHOD.format(
            arch=settings["arch"],
            training=training_label(
                settings["epochs"], trained_with(settings, "warmup_steps"), trained_with(settings, "clip_grad_norm")
            ),
        ),
        f"lambda {settings['rate_lambda']}",
        list(sizes),
        list(backs),
        photos,
        list(seconds),
        peer=str(folder),
        training=f"bench.kodak train-peer --arch {settings['arch']} --like {settings['like']} --lambda "
        f"{settings['rate_lambda']}: {settings['steps']} steps",
        train_hours=round(settings["train_seconds"] / 3600, 3),
    )


# --------------------------------------------------------------------------------------------------------- outputs


def published_points() -> list[dict]:
    return [
        {"method": method, "setting": f"point {i}", "bpp": bpp, "psnr": value, "ms_ssim": None, "published": True}
        for method, points in PUBLISHED.items()
        for i, (bpp, value) in enumerate(points, start=1)
    ]


def _key(point: dict) -> tuple[str, str]:
    return point["method"], point["setting"]


def save_json(path: Path, measured: list[dict]) -> list[dict]:
    """Write the measured points over those of the same method and setting in ``path`` (the others kept, the
    published ones written anew) and return all of them."""
    return merge_json(path, measured, _key, lambda p: (p["method"], p["bpp"]), published_points())


def curves(points: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["method"], []).append(p)
    return out


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), as CompressAI plots it: its top end spread out."""
    return -10 * math.log10(max(1 - value, 1e-10))


def _axis(points: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    kept = [p for p in points if p.get(key) is not None]
    if len(kept) < 2:
        return None
    values = [p[key] if key == "psnr" else ms_ssim_db(p[key]) for p in kept]
    return np.array([p["bpp"] for p in kept]), np.array(values)


def delta(ours: list[dict], reference: list[dict], key: str) -> str:
    """The BD-rate of a curve against a reference in ``key`` (psnr, or ms_ssim in dB) and the range it is taken
    over, or why there is none."""
    a, b = _axis(ours, key), _axis(reference, key)
    span = None if a is None or b is None else overlap(*a, *b)
    if span is None:
        return "-"
    return f"{bd_rate(*a, *b):+.1f}% over {span[0]:.2f}-{span[1]:.2f} dB"


def bd_rows(points: list[dict]) -> list[dict]:
    """Per curve: its points, bpp range, and BD-rates against JPEG and WebP (measured), in PSNR and MS-SSIM."""
    by_method = curves(points)
    table = []
    for method, ours in by_method.items():
        row = {
            "method": method + (" (published)" if ours[0].get("published") and "published" not in method else ""),
            "points": len(ours),
            "bpp": f"{min(p['bpp'] for p in ours):.3f}-{max(p['bpp'] for p in ours):.3f}",
        }
        for reference in REFERENCES:
            for key, label in (("psnr", "PSNR"), ("ms_ssim", "MS-SSIM")):
                given = by_method.get(reference)
                column = f"vs {reference} ({label})"
                row[column] = "-" if given is None or method == reference else delta(ours, given, key)
        table.append(row)
    return table


def alike_lines(points: list[dict]) -> list[str]:
    """The BD-rate of each aekit family against CompressAI's architecture of that name trained alike."""
    by_method = curves(points)
    lines = []
    for method, ours in by_method.items():
        peer = next((p for p in by_method if method.startswith("aekit ") and p == _alike(method)), None)
        if peer is not None:
            psnr_delta, ssim_delta = (delta(ours, by_method[peer], key) for key in ("psnr", "ms_ssim"))
            lines.append(f"- {method} against {peer}: {psnr_delta} in PSNR, {ssim_delta} in MS-SSIM.")
    return lines or ["- No aekit curve has a CompressAI curve trained alike in the JSON yet (`--peers`)."]


def _alike(method: str) -> str:
    """The name of CompressAI's curve trained alike to aekit's curve ``method``."""
    arch, training = method.removeprefix("aekit ").split(", ", 1)
    return PEER_METHOD.format(arch=arch, training=training)


def times_rows(points: list[dict]) -> list[dict]:
    """Per measured curve: the median over its points of the encode and decode seconds per photo."""
    rows = []
    for method, ours in curves(points).items():
        if "encode_s" in ours[0]:
            encode, decode = (float(np.median([p[k] for p in ours])) for k in ("encode_s", "decode_s"))
            rows.append({"method": method, "encode s/photo": f"{encode:.3g}", "decode s/photo": f"{decode:.3g}"})
    return rows


def runs_lines(points: list[dict]) -> list[str]:
    """Each aekit run's and peer's training, and the aekit files of all the photos where they differ by over 1%."""
    lines = []
    for p in points:
        if "training" in p:
            where = p.get("run", p.get("peer"))
            lines.append(f"- {p['method']}, {p['setting']} ({where}, {p['train_hours']:.2f} h): `{p['training']}`")
        if "bpp_one_file" in p and abs(p["bpp_one_file"] / p["bpp"] - 1) > 0.01:
            lines.append(f"  - one file of the {p['photos']} photos: {p['bpp_one_file']:.4f} bpp, not {p['bpp']:.4f}")
    return lines


POINT_COLUMNS = ["method", "setting", "bpp", "psnr", "ms_ssim", "encode_s", "decode_s"]
POINT_FORMATS = {"bpp": ".4f", "psnr": ".2f", "ms_ssim": ".4f", "encode_s": ".3g", "decode_s": ".3g"}
INTRO = (
    "`bench/kodak.py` (issue 30), on the data README's conventions: each of the 24 Kodak photos coded as its own "
    "file (headers counted); bits per pixel = file bits / (width x height) and PSNR over the RGB channels (peak 255), "
    "each the mean over the photos; every decoding rounded to 8-bit pixels; MS-SSIM by `pytorch_msssim` on [0, 1] "
    "RGB. aekit: `aekit compress RUN photo.png` through the library, one file per photo; CompressAI trained alike: "
    "its architecture trained on the aekit run's very crops, steps and objective (`python -m bench.kodak "
    "train-peer`), its `compress()` strings with their lengths and the photo's size. Rows marked published are "
    "CompressAI's own figures (its pretrained models, and JPEG as it measured it), not measured here. BD-rate: "
    "Bjontegaard's delta rate of bits per pixel over the quality range both curves reach (PSNR; MS-SSIM in dB, "
    "-10 log10(1 - MS-SSIM)); negative is fewer bits. Every point is in `bench/results/kodak.json`."
)


def section(points: list[dict], settings: str) -> str:
    return "\n".join(
        [
            HEADING,
            "",
            INTRO,
            "",
            settings,
            "Training (aekit runs and CompressAI trained alike):",
            "",
            *(runs_lines(points) or ["- none measured yet (`--runs`, `--peers`)."]),
            "",
            "BD-rate against JPEG and WebP (Pillow, measured here):",
            "",
            markdown_table(bd_rows(points), list(bd_rows(points)[0]), {}).rstrip(),
            "",
            "aekit against CompressAI trained alike:",
            "",
            *alike_lines(points),
            "",
            "Seconds per photo (the median over a curve's points):",
            "",
            markdown_table(times_rows(points), ["method", "encode s/photo", "decode s/photo"], {}).rstrip(),
            "",
            "<details><summary>Every point</summary>",
            "",
            markdown_table(points, POINT_COLUMNS, POINT_FORMATS).rstrip(),
            "",
            "</details>",
            "",
            f"Figure: `bench/figures/{FIGURE_NAME}` (PSNR and MS-SSIM against bits per pixel; published curves "
            "dashed).",
            "",
        ]
    )


def figure(path: Path, points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    photos = max(p.get("photos", 24) for p in points)  # the published points are of all 24
    for ax, key, label in zip(axes, ("psnr", "ms_ssim"), ("PSNR (dB)", "MS-SSIM (dB, -10 log10(1 - MS-SSIM))")):
        # tab20's 20 colours: the default cycle's 10 repeat among this many curves.
        for colour, (method, ours) in zip(itertools.cycle(plt.get_cmap("tab20").colors), curves(points).items()):
            drawn = sorted((p["bpp"], p[key] if key == "psnr" else ms_ssim_db(p[key])) for p in ours if p[key])
            if drawn:
                style = "--" if ours[0].get("published") else "-"
                ax.plot(*zip(*drawn), style, marker="o", markersize=3, label=method, color=colour)
        title = f"Kodak, {photos} photos: {label.split(' (')[0]}"
        ax.set(xlabel="bits per pixel", ylabel=label, xlim=(0, 2.0), title=title)
        ax.grid(alpha=0.3)
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else its architecture."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def settings_line(args: argparse.Namespace, started: float, notes: list[str]) -> str:
    return (
        "The points come from runs of parts of this script, each replacing its own points; the last run: "
        f"{datetime.date.today().isoformat()}, {cpu_name()}, {args.threads} thread(s), torch "
        f"{torch.__version__}, numpy {np.__version__}, aekit {aekit.__version__}, Pillow {pillow_versions()}; "
        f"{'; '.join(notes) + '; ' if notes else ''}wall time {(time.perf_counter() - started) / 60:.1f} min:"
        "\n\n    python -m bench.kodak " + " ".join(sys.argv[1:]) + "\n"
    )


def evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    from PIL import AvifImagePlugin

    AvifImagePlugin.DEFAULT_MAX_THREADS = args.threads  # its encoder and decoder, like torch's
    try:
        import pytorch_msssim  # noqa: F401
    except ImportError:
        raise BenchError("MS-SSIM needs pytorch-msssim; install it with `pip install -e '.[bench]'`") from None
    photos = read_photos(args.kodak, args.limit)
    for run in args.runs:
        run_summary(run)  # a bad run or peer refused before anything is measured
    for folder in args.peers:
        peer_settings(folder)
    notes = []
    if args.peers and missing():
        notes.append(f"the peers were skipped: CompressAI does not import here ({missing()})")
        say(notes[-1])
    measured = [] if args.no_codecs else codec_points(photos)
    for run in args.runs:
        measured.append(aekit_point(run, photos))
        say(f"{run}: {measured[-1]['bpp']:.3f} bpp, {measured[-1]['psnr']:.2f} dB")
    for folder in args.peers if not missing() else []:
        measured.append(peer_point(folder, photos))
        say(f"{folder}: {measured[-1]['bpp']:.3f} bpp, {measured[-1]['psnr']:.2f} dB")
    if args.limit:
        notes.append(f"the first {len(photos)} photos only (--limit)")
    points = save_json(args.results.parent / "results" / JSON_NAME, measured)
    figure(args.results.parent / "figures" / FIGURE_NAME, points)
    text = section(points, settings_line(args, started, notes))
    print("\n" + text)
    write_section(args.results, HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
