"""Rate-distortion curves of image compression, on the 10,000 MNIST test images and on a small set of colour photo
crops: PSNR and SSIM against bits per pixel and bytes per image for JPEG, WebP and AVIF (Pillow), aekit's PCA and
fixed-bit AE codes, aekit's rate-distortion AE (RD-AE) and CompressAI's factorized-prior model trained alike, with
each one's Bjontegaard delta rate against JPEG, the bytes each needs at equal PSNR, and images per second each way;
written to bench/RESULTS.md ("## Compression") with figures in bench/figures/.

How bytes are counted. The codecs: each image its own file, headers counted (what a user would store), and as a
reference without per-image headers, one file of all the images (MNIST: a 2800 x 2800 mosaic; photos: each held-out
photo whole), divided by the images it holds. aekit: one compressed file of all the test images (`aekit compress`,
header and checksum included) / their number. CompressAI: its ``compress()`` strings, each with its length (a
varint), and the latent's shape once (bench/compressai_peer.py). The RD-AE of bench/rate_distortion.py is read from
bench/rate_distortion_mnist.json where that has run.

Each part keeps its rows in bench/compress_{mnist,photos}.json; the figures and the section are drawn from both, so
one part can run again alone (the equal-bytes figure of a part is drawn when it runs):

    python -m bench.compress --data-dir ../shared/data/mnist --parts mnist,photos

The photos need scikit-image (``pip install -e '.[bench]'``). CompressAI (1.2.8) requires numpy < 2 and a torchvision
built for PyPI's torch, which the project's venv (the CPU build of torch) cannot hold; without it the script says so
and runs the rest. To run it too, use a venv of its own:

    python3 -m venv ../venv-compressai
    ../venv-compressai/bin/pip install compressai scikit-image scikit-learn matplotlib safetensors tqdm constriction
    ../venv-compressai/bin/pip install --no-deps -e .
    ../venv-compressai/bin/python -m bench.compress --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit.models import FAMILIES, model_config
from aekit.report.plots import markdown_table, tile
from aekit.training.trainer import TrainSettings
from aekit.uses.compress import compress, compress_images, decompress, decompress_images
from bench import compressai_peer, rd_figures
from bench.codecs import QUALITIES, bd_rate, one_file, one_file_each, overlap, quality_of, rate_at
from bench.measure import device_name
from bench.mnist_runs import Bench, fit, parser
from bench.photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photos, photo, tiles

HEADING = "## Compression"
HERE = Path(__file__).parent
# What each part measures: MNIST; the photo tiles; the held-out photos whole (measured by the photos part).
POINTS = {part: HERE / f"compress_{part}.json" for part in ("mnist", "photos", "wholes")}
RD_JSON = HERE / "rate_distortion_mnist.json"
# Pillow's names, and how the tables and figures name them.
CODECS = {"JPEG": "JPEG", "WEBP": "WebP", "AVIF": "AVIF"}
# The libraries behind Pillow's codecs, by Pillow's feature names.
LIBRARIES = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
ONE_EACH, ONE_ALL = "one file per image", "one file of all"
# The reference of the delta rates.
REFERENCE = f"JPEG, {ONE_EACH}"
# lambda of the RD-AE: nats of distortion per bit; of CompressAI's model: squared error per bit (for photos both).
MNIST_RD_LAMBDAS, MNIST_PEER_LAMBDAS = (0.01, 0.03, 0.1, 0.3), (0.01, 0.03, 0.1, 0.3)
PHOTO_LAMBDAS = (0.003, 0.01, 0.03)
# lambda of the fully convolutional RD-AE (--net fully-conv), which codes the held-out photos whole too.
PHOTO_MAP_LAMBDAS = (0.001, 0.003, 0.01)
# Test images drawn in the equal-bytes figures: MNIST's first of each digit, and four photo tiles.
PHOTO_SHOWN = (5, 10, 50, 120)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    for part in args.parts:
        started = time.perf_counter()
        for name, (rows, notes) in (mnist_part if part == "mnist" else photo_part)(bench, args).items():
            saved = {"settings": settings_line(bench, args, part, started), "notes": notes, "rows": rows}
            POINTS[name].write_text(json.dumps(_plain(saved), indent=1) + "\n")
    parts = {part: json.loads(path.read_text()) for part, path in POINTS.items() if path.exists()}
    if "mnist" in parts:
        parts["mnist"]["rows"] += rate_distortion_json(parts["mnist"]["notes"])
    rd_figures.curves(HERE / "figures" / "rate_distortion.png", {p: v["rows"] for p, v in parts.items()})
    bench.publish(HEADING, section(parts))
    return 0


def arguments(argv: list[str] | None):
    args = parser(__doc__.split("\n\n")[0], epochs=5)
    args.add_argument(
        "--parts",
        default="mnist,photos",
        type=lambda text: [part for part in text.split(",") if part],
        help="what to measure: mnist, photos, both, or '' (none: the figures and section from the saved rows)",
    )
    args.add_argument("--threads", type=int, default=1, help="torch's CPU threads (1: the machine is shared)")
    args.add_argument("--code-dims", default="8,16,32", help="MNIST fixed-bit code sizes, comma-separated")
    args.add_argument("--bits", default="2,4,6,8", help="fixed-bit depths, comma-separated")
    args.add_argument("--hidden", default="512,256", help="MNIST MLP hidden widths, comma-separated")
    args.add_argument("--peer-epochs", type=int, default=2, help="epochs of the RD-AE and CompressAI trained alike")
    args.add_argument("--peer-channels", default="32,32", help="CompressAI's N,M")
    args.add_argument("--test-images", type=int, default=10000, help="MNIST test images measured (the first N)")
    args.add_argument("--photo-size", type=int, default=64, help="side of the photo crops")
    args.add_argument("--photo-crops", type=int, default=4096, help="random training crops")
    args.add_argument("--photo-epochs", type=int, default=12)
    args.add_argument("--photo-batch", type=int, default=64)
    args.add_argument("--photo-codes", default="64,256", help="the photo conv AE's code sizes")
    args.add_argument("--photo-hidden", default="32,64,128", help="the photo conv nets' channels")
    args.add_argument("--photo-map-channels", type=int, default=32, help="the fully-conv RD-AE's code map channels")
    args.add_argument("--mnist-bytes", type=float, default=16.0, help="bytes per image of the MNIST equal-bytes figure")
    args.add_argument("--photo-bytes", type=float, default=256.0, help="bytes per crop of the photos' figure")
    return args.parse_args(argv)


def settings_line(bench: Bench, args, part: str, started: float) -> str:
    torch_settings = (
        f"{bench.args.epochs} epochs of batch {args.batch_size} for the fixed-bit models, {args.peer_epochs} for the "
        "RD-AE and CompressAI trained alike"
        if part == "mnist"
        else f"{args.photo_epochs} epochs of batch {args.photo_batch} on {args.photo_crops} crops for every model"
    )
    return (
        f"{datetime.date.today().isoformat()}, {device_name(bench.device)}, torch {torch.__version__}, numpy "
        f"{np.__version__}, aekit {aekit.__version__}, Pillow {pillow_versions()}; {torch_settings} (Adam 1e-3, "
        f"cosine schedule), seed {args.seed}; wall time {(time.perf_counter() - started) / 60:.1f} min.\n\n"
        "    python -m bench.compress " + " ".join(sys.argv[1:])
    )


def pillow_versions() -> str:
    import PIL
    from PIL import features

    libraries = ", ".join(f"lib{name} {features.version(code)}" for name, code in LIBRARIES.items())
    return f"{PIL.__version__} ({libraries})"


def _plain(value):
    """Rows as JSON: private keys (decoded images kept for the figures) dropped, numpy numbers as floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, np.floating) else value


def point(curve: str, setting: str, output: np.ndarray, clean: np.ndarray, nbytes: float, shown, **extra) -> dict:
    """One point of a curve: its bytes per image and bits per pixel, its quality, and the ``shown`` test images
    decoded (for the equal-bytes figure; not saved)."""
    pixels = clean.shape[-1] * clean.shape[-2]
    return {
        "curve": curve,
        "setting": setting,
        "bytes_per_image": nbytes,
        "bpp": nbytes * 8 / pixels,
        **quality_of(output, clean),
        **extra,
        "_shown": output[list(shown)],
    }


# The codecs.


def codec_rows(clean: np.ndarray, wholes: list[np.ndarray], shown, say) -> list[dict]:
    """JPEG, WebP and AVIF at every quality of :data:`QUALITIES`: each test image its own file, and the ``wholes``
    (images whose tiles, in order, are the test images) each one file."""
    rows, size = [], clean.shape[-1]
    for kind, name in CODECS.items():
        for quality in QUALITIES[kind]:
            nbytes, back, encode_rate, decode_rate = one_file_each(clean, kind, quality)
            rows.append(
                point(
                    f"{name}, {ONE_EACH}",
                    f"q{quality}",
                    back,
                    clean,
                    nbytes,
                    shown,
                    compress_images_per_s=encode_rate,
                    decompress_images_per_s=decode_rate,
                )
            )
            sizes, backs = zip(*(one_file(whole, kind, quality) for whole in wholes))
            back = np.concatenate([tiles(b, size) for b in backs])
            rows.append(point(f"{name}, {ONE_ALL}", f"q{quality}", back, clean, sum(sizes) / len(clean), shown))
        say(
            f"{name}: "
            + ", ".join(f"{r['setting']} {r['bytes_per_image']:.0f} B" for r in rows[-2 * len(QUALITIES[kind]) :: 2])
        )
    return rows


def lossless_png(clean: np.ndarray, wholes: list[np.ndarray]) -> dict:
    """PNG's bytes per image both ways, for the text: it is lossless, so it has no place on a PSNR curve."""
    each = one_file_each(clean, "PNG", None)[0]
    return {ONE_EACH: each, ONE_ALL: sum(one_file(w, "PNG", None)[0] for w in wholes) / len(clean)}


# aekit's models.


def aekit_rows(model, curve: str, settings: list, clean: np.ndarray, shown) -> list[dict]:
    """Points of a model's compressed files (``settings``: the bit depths of a fixed-bit code, or [None] for an
    entropy-coded one), with compress and decompress timed."""
    rows = []
    for bits in settings:
        begin = time.perf_counter()
        data = compress(model, clean, bits)
        middle = time.perf_counter()
        back = decompress(model, data)
        end = time.perf_counter()
        rows.append(
            point(
                curve,
                f"{bits} bits" if bits else "",
                back,
                clean,
                len(data) / len(clean),
                shown,
                compress_images_per_s=len(clean) / (middle - begin),
                decompress_images_per_s=len(clean) / (end - middle),
            )
        )
    return rows


def rd_settings(rows: list[dict], rate_lambda: float) -> list[dict]:
    """Rows of an entropy-coded model named by its lambda."""
    for row in rows:
        row["setting"] = f"lambda {rate_lambda}"
    return rows


def peer_rows(data, spec_of, settings: TrainSettings, bench: Bench, lambdas, peer_lambdas, peer_nm, shown) -> tuple:
    """The RD-AE at each of ``lambdas`` and CompressAI's factorized prior at each of ``peer_lambdas``, trained for
    the same steps on ``data``; CompressAI's rows are left out, with the reason in the notes, where it does not
    import."""
    clean, rows, notes = data.x_test, [], {}
    if "rd-ae" not in FAMILIES:
        notes["rd-ae"] = "the rd-ae family is not in this aekit (aekit.models.FAMILIES)"
    else:
        for rate_lambda in lambdas:
            model = fit_model(spec_of("rd-ae", rate_lambda=rate_lambda), data, settings, bench)
            rows += rd_settings(
                aekit_rows(model, f"RD-AE, {settings.epochs} epochs", [None], clean, shown), rate_lambda
            )
    why = compressai_peer.missing()
    if why:
        notes["compressai"] = f"CompressAI does not import here ({why})"
        return rows, notes
    from compressai import __version__

    notes["compressai"] = f"CompressAI {__version__}, FactorizedPrior(N={peer_nm[0]}, M={peer_nm[1]})"
    for rate_lambda in peer_lambdas:
        torch.manual_seed(bench.args.seed)  # the same initial weights at every lambda, as aekit's fit gives its models
        model = compressai_peer.factorized_prior(data.shape[0], *peer_nm)
        steps = compressai_peer.train(
            model, data.x_train, rate_lambda, settings.epochs, settings.batch_size, bench.args.seed, bench.say
        )
        measured, back = compressai_peer.measure(model, clean)
        curve, nbytes = f"CompressAI factorized, {settings.epochs} epochs", measured.pop("bytes_per_image")
        rows.append(point(curve, f"lambda {rate_lambda}", back, clean, nbytes, shown, **measured, steps=steps))
        bench.say(f"  compressai lambda {rate_lambda}: {nbytes:.2f} B, {rows[-1]['psnr_db']:.2f} dB")
    return rows, notes


def fit_model(spec, data, settings: TrainSettings, bench: Bench):
    torch_model, seconds = fit(spec, data, settings, bench.device, bench.args.seed)
    bench.say(f"fitted {spec.family} (code {spec.code_dim}) in {seconds:.0f} s")
    return torch_model.cpu().eval()


# The parts.


def mnist_part(bench: Bench, args) -> tuple[list[dict], dict]:
    data = dataclasses.replace(bench.data, x_test=bench.data.x_test[: args.test_images])
    clean = data.x_test
    labels = bench.data.y_test[: args.test_images]
    shown = [int(np.flatnonzero(labels == digit)[0]) for digit in range(10)]
    mosaic = tile(clean, columns=100).transpose(2, 0, 1)
    rows = codec_rows(clean, [mosaic], shown, bench.say)
    notes = {"png": lossless_png(clean, [mosaic])}
    hidden = tuple(int(h) for h in args.hidden.split(","))
    bits = [int(b) for b in args.bits.split(",")]
    for code_dim in (int(c) for c in args.code_dims.split(",")):
        for name in ("pca", "ae"):
            spec = model_config(name, data.shape, code_dim=code_dim, **({} if name == "pca" else {"hidden": hidden}))
            model = bench.fit(spec)
            rows += aekit_rows(model, f"{name.upper()}, code {code_dim} (fixed bits)", bits, clean, shown)

    def spec_of(family, **fields):  # the RD-AE as bench/rate_distortion.py trains it
        return model_config(family, data.shape, code_dim=32, hidden=hidden, **fields)

    settings = dataclasses.replace(bench.settings, epochs=args.peer_epochs)
    nm = tuple(int(c) for c in args.peer_channels.split(","))
    peers, peer_notes = peer_rows(data, spec_of, settings, bench, MNIST_RD_LAMBDAS, MNIST_PEER_LAMBDAS, nm, shown)
    rd_figures.equal_bytes(
        HERE / "figures" / "equal_bytes_mnist.png", clean[shown], rows + peers, args.mnist_bytes, "MNIST test digits"
    )
    return {"mnist": (rows + peers, {**notes, **peer_notes})}


def rate_distortion_json(notes: dict) -> list[dict]:
    """The RD-AE rows of bench/rate_distortion.py as it last ran (no SSIM there), codes rounded and searched for
    (``--search``), or none, with a note saying so."""
    if not RD_JSON.exists():
        notes["rate_distortion_json"] = f"bench/{RD_JSON.name} is absent: run python -m bench.rate_distortion"
        return []
    rows = [r for r in json.loads(RD_JSON.read_text()) if r["method"].startswith("RD-AE")]
    notes["rate_distortion_json"] = f"{len(rows)} RD-AE points from bench/{RD_JSON.name}"
    return [
        {
            "curve": f"{r['method']} (bench/rate_distortion.py)",
            "setting": f"lambda {r['lambda']}",
            "bytes_per_image": r["bytes_per_image"],
            "bpp": r["bytes_per_image"] * 8 / 784,
            "psnr_db": r["psnr_db"],
            "ssim": None,
            "sse_per_image": r["sse_per_image"],
        }
        for r in rows
    ]


def photo_part(bench: Bench, args) -> tuple[list[dict], dict]:
    photos = load_photos(args.photo_size, args.photo_crops, args.seed)
    data, clean = photos.data, photos.data.x_test
    bench.say(f"photos: {len(data.x_train)} training crops, {len(clean)} test tiles of {args.photo_size} pixels")
    rows = codec_rows(clean, photos.wholes, PHOTO_SHOWN, bench.say)
    notes = {"png": lossless_png(clean, photos.wholes)}
    hidden = tuple(int(h) for h in args.photo_hidden.split(","))
    settings = dataclasses.replace(bench.settings, epochs=args.photo_epochs, batch_size=args.photo_batch)
    bits = [int(b) for b in args.bits.split(",")]

    def spec_of(family, code_dim=256, **fields):
        return model_config(
            family, data.shape, code_dim=code_dim, net="conv", hidden=hidden, likelihood="gaussian", **fields
        )

    for code_dim in (int(c) for c in args.photo_codes.split(",")):
        model = fit_model(spec_of("ae", code_dim), data, settings, bench)
        rows += aekit_rows(model, f"AE conv, code {code_dim} (fixed bits)", bits, clean, PHOTO_SHOWN)
    nm = tuple(int(c) for c in args.peer_channels.split(","))
    peers, peer_notes = peer_rows(data, spec_of, settings, bench, PHOTO_LAMBDAS, PHOTO_LAMBDAS, nm, PHOTO_SHOWN)
    originals = [photo(name).transpose(2, 0, 1).astype(np.float32) / 255 for name in TEST_PHOTOS]
    wholes = whole_codec_rows(originals, bench.say)
    curve = f"RD-AE fully-conv, {settings.epochs} epochs"
    for rate_lambda in PHOTO_MAP_LAMBDAS:
        spec = model_config(
            "rd-ae",
            data.shape,
            code_dim=args.photo_map_channels,
            net="fully-conv",
            hidden=hidden,
            likelihood="gaussian",
            rate_lambda=rate_lambda,
        )
        model = fit_model(spec, data, settings, bench)
        peers += rd_settings(aekit_rows(model, curve, [None], clean, PHOTO_SHOWN), rate_lambda)
        wholes += rd_settings(whole_rd_rows(model, curve, originals), rate_lambda)
        bench.say(f"  fully-conv lambda {rate_lambda}: {wholes[-1]['bpp']:.3f} bpp, {wholes[-1]['psnr_db']:.2f} dB")
    rd_figures.equal_bytes(
        HERE / "figures" / "equal_bytes_photos.png",
        clean[list(PHOTO_SHOWN)],
        rows + peers,
        args.photo_bytes,
        "held-out photo tiles",
    )
    whole_png = sum(one_file(o, "PNG", None)[0] for o in originals) / len(originals)
    return {
        "photos": (rows + peers, {**notes, **peer_notes}),
        "wholes": (wholes, {"png": {ONE_EACH: whole_png, ONE_ALL: whole_png}}),
    }


# The held-out photos whole.


def whole_point(curve: str, setting: str, backs, originals: list[np.ndarray], nbytes: int, **extra) -> dict:
    """One point of a curve of whole photos (each its own size): bytes per photo, bits per pixel over all their
    pixels, and the mean over photos of each one's quality."""
    pixels = sum(o.shape[1] * o.shape[2] for o in originals)
    each = [quality_of(back[None], original[None]) for back, original in zip(backs, originals)]
    return {
        "curve": curve,
        "setting": setting,
        "bytes_per_image": nbytes / len(originals),
        "bpp": nbytes * 8 / pixels,
        **{key: float(np.mean([q[key] for q in each])) for key in each[0]},
        **extra,
    }


def whole_codec_rows(originals: list[np.ndarray], say) -> list[dict]:
    """JPEG, WebP and AVIF at every quality of :data:`QUALITIES`, each photo its own file."""
    rows = []
    for kind, name in CODECS.items():
        for quality in QUALITIES[kind]:
            sizes, backs = zip(*(one_file(original, kind, quality) for original in originals))
            rows.append(whole_point(f"{name}, {ONE_EACH}", f"q{quality}", backs, originals, sum(sizes)))
        say(f"{name} whole: " + ", ".join(f"{r['setting']} {r['bpp']:.2f} bpp" for r in rows[-len(QUALITIES[kind]) :]))
    return rows


def whole_rd_rows(model, curve: str, originals: list[np.ndarray]) -> list[dict]:
    """The point of a fully convolutional model's one compressed file of the photos, each coded whole at its size."""
    begin = time.perf_counter()
    data = compress_images(model, originals)
    middle = time.perf_counter()
    backs = decompress_images(model, data)
    end = time.perf_counter()
    n = len(originals)
    rate = {"compress_images_per_s": n / (middle - begin), "decompress_images_per_s": n / (end - middle)}
    return [whole_point(curve, "", backs, originals, len(data), **rate)]


# The section of RESULTS.md.


def section(parts: dict[str, dict]) -> str:
    text = [HEADING, "", INTRO, ""]
    for part, saved in parts.items():
        text += part_text(part, saved)
    text += [
        "Figures: `bench/figures/rate_distortion.png` (PSNR and SSIM against bits per pixel, bytes per image on the "
        "top axis), `bench/figures/equal_bytes_mnist.png` and `bench/figures/equal_bytes_photos.png` (originals "
        "beside each method's decoding at the point nearest the same bytes per image).",
        "",
    ]
    return "\n".join(text)


INTRO = (
    "`bench/compress.py`: rate-distortion curves. Bytes per image: the codecs (Pillow) with each image its own file, "
    "headers counted, and for reference one file of all the images (MNIST: one 2800 x 2800 mosaic; photos: each "
    "held-out photo whole) / the images it holds; aekit: one `aekit compress` file of all the test images (header, "
    "tables and checksum included) / their number; CompressAI: its `compress()` strings, each with its length, and "
    "the latent's shape once. Bits per pixel: bytes x 8 / pixels of an image (colour pixels counted once). PSNR: "
    "the mean over images of each one's, in dB, on [0, 1] intensities; SSIM: the mean of each image's (Wang et al.'s "
    "11 x 11 Gaussian window, as scikit-image computes it; colour: the mean over channels). BD-rate: Bjontegaard's "
    "delta rate against JPEG as single files over the PSNR range both curves reach (log rate a PCHIP of PSNR, points "
    "a curve's others beat left out); negative is fewer bytes. Throughput: images per second on one CPU thread, the "
    "median over a curve's points (aekit: the encoder and the coder; the codecs: Pillow's encoder, then decoder)."
)


def part_text(part: str, saved: dict) -> list[str]:
    rows, notes = saved["rows"], saved["notes"]
    text = [f"### {PART_TITLES[part]}", "", PART_INTRO[part], "", saved["settings"], ""]
    text += [f"- {key}: {value}" for key, value in notes.items() if key != "png"]
    png = notes["png"]
    text += [f"- PNG (lossless): {png[ONE_EACH]:.1f} bytes per image as single files, {png[ONE_ALL]:.1f} in one."]
    text += [f"- The smallest single file each codec makes: {smallest_files(rows)}.", ""]
    bd_table = bd_rows(rows)
    columns = BD_COLUMNS + ([PEER_COLUMN] if any(PEER_COLUMN in row for row in bd_table) else [])
    text += [markdown_table(bd_table, columns, {}).rstrip(), ""]
    targets = PSNR_TARGETS[part]
    text += [
        "Bytes per image at equal PSNR (interpolated on each curve; - where it does not reach it):",
        "",
        markdown_table(equal_psnr_rows(rows, targets), ["curve", *(f"{t} dB" for t in targets)], {}).rstrip(),
        "",
        "Throughput (images per second, one thread):",
        "",
        markdown_table(throughput_rows(rows), ["curve", "compress", "decompress"], {}).rstrip(),
        "",
        "<details><summary>Every point</summary>",
        "",
        markdown_table(rows, POINT_COLUMNS, POINT_FORMATS).rstrip(),
        "",
        "</details>",
        "",
    ]
    return text


PART_TITLES = {
    "mnist": "MNIST, the 10,000 test images",
    "photos": "Colour photos, a small set",
    "wholes": "Colour photos whole, each at its own size",
}
PART_INTRO = {
    "mnist": (
        "28 x 28 grey digits. Fixed-bit PCA and AE (MLP 512-256, cross-entropy): `aekit compress --bits B` (each code "
        "value at B bits between its dimension's minimum and maximum). RD-AE: `--model rd-ae` (MLP 512-256, code 32, "
        "cross-entropy + lambda x bits), entropy-coded; CompressAI's `FactorizedPrior(N, M)` (its 3-channel first and "
        "last layers replaced by 1-channel ones, the digits padded with zeros to 32 x 32 and cut back), trained on the "
        "squared error + lambda x bits; both on the 60,000 training images for the same steps. The curves marked "
        "(bench/rate_distortion.py) are that benchmark's RD-AE (its own MLP and epochs, in its section), its codes "
        "rounded and searched for (`aekit compress --search`)."
    ),
    "photos": (
        f"64 x 64 colour tiles of held-out photos ({', '.join(TEST_PHOTOS)}: 148 tiles, scikit-learn's two are JPEGs "
        f"already), the models trained on random 64 x 64 crops (half mirrored) of {', '.join(TRAIN_PHOTOS)} "
        "(scikit-image's data): a small set, not a standard benchmark. aekit's conv nets (channels 32-64-128, a linear "
        "layer to the code), the squared error; the fixed-bit AE at B bits a value; the RD-AE and CompressAI's "
        "`FactorizedPrior(N, M)` (3 channels, as in the zoo) on the squared error + lambda x bits, for the same steps. "
        "RD-AE fully-conv: `--model rd-ae --net fully-conv` (stride-2 convolutions 32-64-128, then a 3 x 3 "
        "convolution to a code map of --photo-map-channels channels at an eighth of the height and width; no linear "
        "layer), trained alike; it codes these tiles and the held-out photos whole (the next part)."
    ),
    "wholes": (
        f"The held-out photos ({', '.join(TEST_PHOTOS)}: 300 x 451, 427 x 640 and 427 x 640) whole, not cut into "
        "tiles: each codec's one file per photo, and the fully convolutional RD-AE of the part above (trained on 64 x "
        "64 crops) coding each photo at its own size in one `aekit compress` file of the three (codec version 4: "
        "each photo's size and its code map's in the header). Bytes per image: per photo; bits per pixel: over the "
        "three photos' pixels; PSNR and SSIM: the mean over the photos of each one's. Three photos: a small set, not "
        "a standard benchmark."
    ),
}
PSNR_TARGETS = {
    "mnist": (16, 18, 20, 22, 24, 28),
    "photos": (18, 20, 22, 24, 28, 32),
    "wholes": (20, 22, 24, 26, 28, 32),
}
BD_COLUMNS = [
    "curve",
    "points",
    "PSNR range (dB)",
    "bytes per image",
    "BD-rate vs JPEG (PSNR)",
    "BD-rate vs JPEG (SSIM)",
]
PEER = "CompressAI factorized"
PEER_COLUMN = "BD-rate vs CompressAI (PSNR)"
POINT_COLUMNS = ["curve", "setting", "bytes_per_image", "bpp", "psnr_db", "ssim", "sse_per_image"]
POINT_FORMATS = {"bytes_per_image": ".1f", "bpp": ".3f", "psnr_db": ".2f", "ssim": ".4f", "sse_per_image": ".3f"}


def smallest_files(rows: list[dict]) -> str:
    """Each codec's cheapest single file (its bytes per image, quality setting and PSNR): below it, it has no point."""
    cheapest = [
        min(points, key=lambda p: p["bytes_per_image"])
        for name, points in curves_of(rows).items()
        if name.endswith(ONE_EACH)
    ]
    return ", ".join(
        f"{p['curve'].split(',')[0]} {p['bytes_per_image']:.1f} B ({p['setting']}, {p['psnr_db']:.1f} dB)"
        for p in cheapest
    )


def curves_of(rows: list[dict]) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for row in rows:
        curves.setdefault(row["curve"], []).append(row)
    return curves


def _axis(points: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    kept = [p for p in points if p.get(key) is not None]
    return (np.array([p["bytes_per_image"] for p in kept]), np.array([p[key] for p in kept])) if kept else None


def _delta(ours, reference, key: str) -> str:
    """A delta rate and the range of ``key`` it is taken over, or why there is none."""
    span = overlap(*ours, *reference)
    if span is None:
        return "no overlap"
    unit = "{:.1f}-{:.1f} dB" if key == "psnr_db" else "{:.3f}-{:.3f}"
    return f"{bd_rate(*ours, *reference):+.1f}% over " + unit.format(*span)


def bd_rows(rows: list[dict]) -> list[dict]:
    """Per curve: its points, ranges, and delta rates against JPEG's single files (PSNR, SSIM) and against
    CompressAI's model where it ran."""
    curves = curves_of(rows)
    reference = {key: _axis(curves[REFERENCE], key) for key in ("psnr_db", "ssim")}
    peer = next((_axis(points, "psnr_db") for name, points in curves.items() if name.startswith(PEER)), None)
    table = []
    for name, points in curves.items():
        psnr_values = [p["psnr_db"] for p in points]
        row = {
            "curve": name,
            "points": str(len(points)),
            "PSNR range (dB)": f"{min(psnr_values):.1f}-{max(psnr_values):.1f}",
            "bytes per image": f"{min(p['bytes_per_image'] for p in points):.1f}-"
            f"{max(p['bytes_per_image'] for p in points):.1f}",
        }
        for key, column in (("psnr_db", "BD-rate vs JPEG (PSNR)"), ("ssim", "BD-rate vs JPEG (SSIM)")):
            ours = _axis(points, key)
            row[column] = "-" if ours is None or name == REFERENCE else _delta(ours, reference[key], key)
        if peer is not None and not name.startswith(PEER):
            row[PEER_COLUMN] = _delta(_axis(points, "psnr_db"), peer, "psnr_db")
        table.append(row)
    return table


def equal_psnr_rows(rows: list[dict], targets) -> list[dict]:
    table = []
    for name, points in curves_of(rows).items():
        rates = _axis(points, "psnr_db")
        needed = {f"{t} dB": rate_at(*rates, t) for t in targets}
        table.append({"curve": name, **{k: "-" if v is None else f"{v:.1f}" for k, v in needed.items()}})
    return table


def throughput_rows(rows: list[dict]) -> list[dict]:
    table = []
    for name, points in curves_of(rows).items():
        timed = [p for p in points if p.get("compress_images_per_s")]
        if timed:
            table.append(
                {
                    "curve": name,
                    "compress": f"{np.median([p['compress_images_per_s'] for p in timed]):,.0f}",
                    "decompress": f"{np.median([p['decompress_images_per_s'] for p in timed]):,.0f}",
                }
            )
    return table


if __name__ == "__main__":
    sys.exit(main())
