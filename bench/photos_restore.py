"""Photo restoration (issue 27): denoising on BSD68, Set12 (grey) and CBSD68 (colour) against BM3D, and
super-resolution on Set5 and Set14 against bicubic, beside the published tables of the data's README; written to
bench/RESULTS.md ("## Photo restoration"), every row to bench/results/photos_restore.json, crops to
bench/figures/photos_restore_{denoise,upscale}.png.

Denoising: Gaussian noise of standard deviation sigma on the 0-255 scale added to the clean image without clipping,
drawn from a generator seeded by the set, the image's name and sigma, so every method sees the very same noisy
image; PSNR (peak 255) of each output as it is (not clipped or rounded) against the clean image, averaged over the
set. BM3D is the `bm3d` package (``pip install -e '.[bench]'``; colour: ``bm3d_rgb``) given the true sigma.

Super-resolution, on the luminance Y of YCbCr (ITU-R BT.601, 16-235; a grey image is its own Y, as the published
scripts take it), in floating point: the clean Y is cropped to a multiple of the factor and downscaled by Pillow's
bicubic filter (which widens its kernel by the factor when it shrinks, an antialiasing filter as MATLAB's imresize
of the published tables, though not bit for bit), then enlarged by Pillow's bicubic filter or by aekit; PSNR
(peak 255) after cropping `factor` pixels from each border.

aekit's rows come from run folders of the `red` family (``aekit.load``): ``--denoise-run 15,25,50=RUN`` (a grey
denoiser, used at those sigmas), ``--colour-run 25=RUN`` (CBSD68), ``--upscale-run RUN`` (at its ``factors``), or
``--train`` to train them first with ``aekit train`` into ``--runs`` (the commands it runs: :func:`train_commands`;
a run already there is kept). A missing or unfit run is refused in one line before anything is measured.

Each row has the seconds per image on the wall clock and in CPU time (the process's, all threads: the work done,
whatever else the shared machine runs). Every measured row replaces the row of the same task, set, level and method
in the JSON file and keeps the others, so parts can run apart; the baselines' figures of each image are kept in
bench/results/photos_restore_images.jsonl as they come, so a run cut short goes on where it stopped:

    python -m bench.photos_restore --data-dir ../shared/data/photos --sets Set5,Set14
    python -m bench.photos_restore --data-dir ../shared/data/photos --sets Set12 --sigmas 25 --limit 2  # quick
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

import aekit
from aekit.errors import AekitError
from aekit.report.plots import markdown_table
from bench.measure import device_name
from bench.mnist_runs import RESULTS, merge_json, write_section

HEADING = "## Photo restoration"
JSON_NAME, RECORDS_NAME = "photos_restore.json", "photos_restore_images.jsonl"
FIGURE = "photos_restore_{task}.png"
# The set, level and image of each task's figure (runs of other parts leave it as it is).
FIGURE_OF = {"denoise": ("BSD68", 25, "test001.png"), "upscale": ("Set5", 4, "butterfly.png")}


class PhotoSet(NamedTuple):
    folder: str  # under --data-dir
    task: str
    colour: bool
    levels: tuple[int, ...]  # sigmas or factors measured unless told otherwise
    images: int


SETS = {
    "BSD68": PhotoSet("bsd68", "denoise", False, (15, 25, 50), 68),
    "Set12": PhotoSet("set12", "denoise", False, (15, 25, 50), 12),
    "CBSD68": PhotoSet("cbsd68", "denoise", True, (25,), 68),
    "Set5": PhotoSet("set5", "upscale", True, (2, 3, 4), 5),
    "Set14": PhotoSet("set14", "upscale", True, (2, 3, 4), 14),
}
LEVEL = {"denoise": "sigma", "upscale": "factor"}
# The times measured of each method: the JSON field and the table's column.
TIMES = {"seconds_per_image": "s/image", "cpu_seconds_per_image": "CPU s/image"}
# The data README's published figures (mean PSNR, dB): method -> {(set, level): psnr}.
PUBLISHED = {
    "denoise": {
        "BM3D": {("BSD68", 15): 31.07, ("BSD68", 25): 28.57, ("BSD68", 50): 25.62},
        "TNRD": {("BSD68", 15): 31.42, ("BSD68", 25): 28.92, ("BSD68", 50): 25.97},
        "DnCNN-S": {("BSD68", 15): 31.73, ("BSD68", 25): 29.23, ("BSD68", 50): 26.23},
    },
    "upscale": {
        "bicubic": {("Set5", 2): 33.66, ("Set5", 3): 30.39, ("Set5", 4): 28.42}
        | {("Set14", 2): 30.24, ("Set14", 3): 27.55, ("Set14", 4): 26.00},
        "SRCNN": {("Set5", 2): 36.66, ("Set5", 3): 32.75, ("Set5", 4): 30.48}
        | {("Set14", 2): 32.42, ("Set14", 3): 29.28, ("Set14", 4): 27.49},
        "VDSR": {("Set5", 2): 37.53, ("Set5", 3): 33.66, ("Set5", 4): 31.35}
        | {("Set14", 2): 33.03, ("Set14", 3): 29.77, ("Set14", 4): 28.01},
    },
}
INSTALL_BM3D = "BM3D skipped: the bm3d package is missing; install it with `pip install -e '.[bench]'`"
# `--train`: the settings of the models it trains (patches of train400, fresh noise or low-resolution input each step).
TRAIN_PATCH = {"denoise": 40, "upscale": 48}  # 48: whole low-resolution pixels at x2, x3 and x4


class BenchError(AekitError):
    """A benchmark input that cannot be used as given (a run, a set folder)."""


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        runs = train_runs(args) if args.train else given_runs(args)
        models = {key: loaded(run) for key, run in runs.items()}
        images = {name: read_set(args.data_dir, name, args.limit) for name in args.sets}
    except AekitError as error:
        print(f"photos_restore: error: {error}", file=sys.stderr)
        return 2
    say = lambda text: print(f"[{time.perf_counter() - started:7.1f} s] {text}", flush=True)  # noqa: E731
    bm3d = _bm3d(say)
    json_path = args.results.parent / "results" / JSON_NAME
    records = ImageRecords(json_path.with_name(RECORDS_NAME))
    rows, crops = [], {}
    for name in args.sets:
        task = SETS[name].task
        for level in levels(args, name):
            methods = (denoisers if task == "denoise" else upscalers)(name, level, models, bm3d)
            measured = measure(name, level, images[name], methods, crops, records)
            say(f"{name} {LEVEL[task]} {level}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in measured))
            rows += measured
            save_json(json_path, rows)  # after each level, so a run cut short keeps what it measured
    all_rows = save_json(json_path, rows)
    for task, (title, cells) in crops.items():
        draw_crops(args.results.parent / "figures" / FIGURE.format(task=task), title, cells)
    text = section(all_rows, settings_line(args, started))
    print("\n" + text)
    write_section(args.results, HEADING, text)
    return 0


def arguments(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda text: tuple(int(v) for v in text.split(",") if v)  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the photos folder (bsd68/, set12/, ...)")
    parser.add_argument(
        "--sets", default=",".join(SETS), type=lambda t: [s for s in t.split(",") if s], help=", ".join(SETS)
    )
    parser.add_argument("--sigmas", type=ints, help="noise levels (default: 15,25,50 grey, 25 colour)")
    parser.add_argument("--factors", type=ints, help="upscaling factors (default: 2,3,4)")
    parser.add_argument("--limit", type=int, help="the first N images of each set only (a quick run)")
    parser.add_argument("--denoise-run", action="append", default=[], metavar="SIGMAS=RUN", help="a grey denoiser")
    parser.add_argument("--colour-run", action="append", default=[], metavar="SIGMAS=RUN", help="a colour denoiser")
    parser.add_argument("--upscale-run", action="append", default=[], metavar="RUN", help="used at its factors")
    parser.add_argument("--train", action="store_true", help="train the runs with `aekit train` first (into --runs)")
    parser.add_argument("--runs", type=Path, default=Path("runs/photos_restore"), help="where --train writes")
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--train-patches", type=int, default=8192, help="patches per epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (1: the machine is shared)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file whose section is rewritten")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sets if name not in SETS]
    if unknown:
        parser.error(f"unknown set {unknown[0]!r}; choose from {', '.join(SETS)}")
    return args


def levels(args: argparse.Namespace, name: str) -> tuple[int, ...]:
    given = args.sigmas if SETS[name].task == "denoise" else args.factors
    return given or SETS[name].levels


# ---------------------------------------------------------------------------------------------------------- the runs


def given_runs(args: argparse.Namespace) -> dict[tuple, Path]:
    """The runs named on the command line: (task, colour, level, run) -> run folder (upscale: (task, colour, index),
    used at its factors). Several denoisers may be given at one sigma (e.g. one trained at it and a blind one)."""
    runs = {}
    for colour, given in ((False, args.denoise_run), (True, args.colour_run)):
        for text in given:
            sigmas, _, run = text.partition("=")
            if not run or not all(s.strip().isdigit() for s in sigmas.split(",")):
                raise BenchError(f"{text!r}: give a denoiser as SIGMAS=RUN, e.g. 15,25,50=runs/red-blind")
            runs |= {("denoise", colour, int(s), run): Path(run) for s in sigmas.split(",")}
    return runs | {("upscale", False, index): Path(run) for index, run in enumerate(args.upscale_run)}


def train_commands(args: argparse.Namespace) -> dict[tuple, list[str]]:
    """The ``aekit train`` command of each model ``--train`` makes: a grey denoiser per sigma and one grey upscaler
    at every factor, on patches of train400."""
    common = [
        "--model", "red", "--dataset", str(args.data_dir / "train400"), "--patches-per-epoch",
        str(args.train_patches), "--epochs", str(args.train_epochs), "--no-progress",
    ]  # fmt: skip
    sigmas = args.sigmas or SETS["BSD68"].levels
    denoise = [*common, "--patch", str(TRAIN_PATCH["denoise"]), "--restore", "denoise", "--sigma"]
    commands = {("denoise", False, s): [*denoise, str(s)] for s in sigmas}
    factors = ",".join(map(str, args.factors or SETS["Set5"].levels))
    upscale = [*common, "--patch", str(TRAIN_PATCH["upscale"]), "--restore", "upscale", "--factors", factors]
    return commands | {("upscale", False, 0): upscale}


def train_runs(args: argparse.Namespace) -> dict[tuple, Path]:
    """Train (or keep, where its weights are there) each model of :func:`train_commands` into ``--runs``."""
    runs = {}
    for key, command in train_commands(args).items():
        run = args.runs / (f"denoise-sigma{key[2]}" if key[0] == "denoise" else "upscale")
        if not (run / "model.safetensors").exists():
            print("training: aekit train " + " ".join([*command, "--out", str(run)]), flush=True)
            done = subprocess.run([sys.executable, "-m", "aekit", "train", *command, "--out", str(run)], check=False)
            if done.returncode != 0:
                raise BenchError(f"training {run} failed (exit {done.returncode}); see the lines above")
        runs[key] = run
    return runs


class Restorer:
    """A loaded run: its model, parameters, training seconds (the sum of its history's epoch times) and what it was
    trained on (its config.json's options, where there is one); its rows' method is ``aekit red``, or ``aekit red
    blind LOW-HIGH`` for a denoiser trained over a range of sigmas."""

    def __init__(self, run: Path, model: torch.nn.Module):
        self.run, self.model = run, model
        self.parameters = sum(p.numel() for p in model.parameters())
        with open(run / "history.csv", newline="") as handle:
            epochs = [float(record["seconds"]) for record in csv.DictReader(handle)]
        self.train_seconds = sum(epochs)
        sigma = tuple(getattr(model, "sigma", ()))
        blind = getattr(model, "task", None) == "denoise" and len(set(sigma)) > 1
        self.method = f"aekit red blind {sigma[0]}-{sigma[-1]}" if blind else "aekit red"
        config = run / "config.json"
        options = json.loads(config.read_text())["options"] if config.is_file() else None
        self.training = training_summary(options, len(epochs)) if options else None

    def extra(self) -> dict:
        extra = {"run": str(self.run), "parameters": self.parameters, "train_seconds": round(self.train_seconds, 1)}
        return extra | ({"training": self.training} if self.training else {})


def training_summary(options: dict, epochs: int) -> str:
    """What a run learnt from, in a line: its task, net and patches seen in its ``epochs`` (its history's: a resume
    may have raised config.json's)."""
    task = (
        f"sigma {'-'.join(map(str, options['sigma']))}"
        if options["restore"] == "denoise"
        else "x" + ",".join(map(str, options["factors"]))
    )
    seen = epochs * options["patches_per_epoch"]
    return (
        f"{options['restore']} {task}; width {options['width']}, levels {options['levels']}, blocks "
        f"{options['blocks']}; {seen:,} patches of {options['patch']}x{options['patch']} from "
        f"{Path(options['dataset']).name} ({epochs} epochs), batch {options['batch_size']}, lr "
        f"{options['lr']:g} {options['schedule']}"
    )


def loaded(run: Path) -> Restorer:
    """The run's model, refused in one line where it is missing or cannot restore photos."""
    if not (run / "config.json").is_file():
        raise BenchError(f"{run}: not a run folder; train one (`--train`, or `aekit train --model red ...`)")
    model = aekit.load(run)
    if not hasattr(model, "restore"):
        raise BenchError(f"{run}: its model cannot restore photos (no restore()); train one with `--model red`")
    return Restorer(run, model)


# ------------------------------------------------------------------------------------------------- images, measures


def read_set(data_dir: Path, name: str, limit: int | None) -> dict[str, np.ndarray]:
    """The set's clean images by file name, as float64 on the 0-255 scale: (h, w) grey or (h, w, 3) colour;
    a super-resolution set as its luminance Y."""
    folder, task, colour = SETS[name].folder, SETS[name].task, SETS[name].colour
    files = sorted(p for p in (data_dir / folder).glob("*") if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
    if not files:
        raise BenchError(f"{data_dir / folder}: no images; give --data-dir the photos folder of the shared data")
    images = {}
    for path in files[:limit]:
        with Image.open(path) as image:
            grey = image.mode == "L" or (task == "denoise" and not colour)
            pixels = np.asarray(image.convert("L" if grey else "RGB"), np.float64)
        images[path.name] = luma(pixels) if task == "upscale" and not grey else pixels
    return images


def luma(rgb: np.ndarray) -> np.ndarray:
    """Y of ITU-R BT.601 YCbCr in the 16-235 range of 8-bit R, G, B (0-255): 16 + (65.481 R + 128.553 G + 24.966 B)
    / 255, as MATLAB's rgb2ycbcr (in floating point, not rounded)."""
    rgb = np.asarray(rgb, np.float64)
    return 16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255


def psnr(output: np.ndarray, clean: np.ndarray, border: int = 0) -> float:
    """PSNR (dB, peak 255) of ``output`` against ``clean``, both on the 0-255 scale, leaving out ``border`` pixels
    on each side of the first two axes."""
    if border:
        output, clean = output[border:-border, border:-border], clean[border:-border, border:-border]
    return float(10 * np.log10(255**2 / np.mean((np.asarray(output, np.float64) - clean) ** 2)))


def noisy(clean: np.ndarray, set_name: str, image_name: str, sigma: float) -> np.ndarray:
    """``clean`` plus Gaussian noise of standard deviation ``sigma`` (not clipped), from a generator seeded by the set,
    the image and sigma: the same noisy image for every method and every run."""
    seed = zlib.crc32(f"{set_name}/{image_name}/{sigma}".encode())
    return clean + np.random.default_rng(seed).normal(0.0, sigma, clean.shape)


def bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's bicubic resampling of a float image (mode F: no rounding, no clipping) to ``width`` x ``height``."""
    return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize((width, height), Image.BICUBIC), np.float64)


def low_resolution(clean: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean image cropped to a multiple of ``factor`` and its bicubic downscaling by ``factor``."""
    height, width = clean.shape[0] - clean.shape[0] % factor, clean.shape[1] - clean.shape[1] % factor
    cropped = clean[:height, :width]
    return cropped, bicubic(cropped, width // factor, height // factor)


def _tensor(image: np.ndarray) -> torch.Tensor:
    """A (h, w) or (h, w, c) 0-255 image as the (1, c, h, w) [0, 1] intensities a model takes."""
    x = torch.from_numpy(image / 255).float()
    return (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]


def _image(x: torch.Tensor) -> np.ndarray:
    y = x[0].double().numpy() * 255
    return y[0] if y.shape[0] == 1 else y.transpose(1, 2, 0)


def _bm3d(say):
    try:
        import bm3d
    except ImportError:
        say(INSTALL_BM3D)
        return None
    return bm3d


# ---------------------------------------------------------------------------------------------------------- methods


def denoisers(set_name: str, sigma: int, models: dict, bm3d) -> dict:
    """Each method's name -> (function of the noisy image, extra row fields)."""
    colour = SETS[set_name].colour
    methods = {"noisy input": (lambda z: z, {})}
    if bm3d is not None:
        methods["BM3D"] = ((lambda z: bm3d.bm3d_rgb(z, sigma)) if colour else (lambda z: bm3d.bm3d(z, sigma)), {})
    for key, restorer in models.items():
        if key[:3] == ("denoise", colour, sigma):
            restore = restorer.model.restore
            methods[restorer.method] = (lambda z, restore=restore: _restored(restore, z), restorer.extra())
    return methods


def upscalers(set_name: str, factor: int, models: dict, bm3d) -> dict:
    """Each method's name -> (function of the small image and the full size, extra row fields)."""
    methods = {"bicubic": (lambda low, size: bicubic(low, *size), {})}
    for key, restorer in models.items():
        if key[0] == "upscale" and factor in restorer.model.factors:
            enlarge = restorer.model.enlarge
            methods["aekit red"] = (
                lambda low, size, enlarge=enlarge: _restored(lambda x: enlarge(x, factor), low),
                restorer.extra(),
            )
    return methods


def _restored(restore, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _image(restore(_tensor(image)))


class ImageRecords:
    """The baselines' PSNR and times of each image, added to a JSON-lines file as they are measured: a run cut short
    (BM3D takes minutes a set here) goes on where it stopped. aekit's are not kept: a run folder may be trained again.
    Delete the file to measure everything anew."""

    def __init__(self, path: Path | None):
        self.path, self.records = path, {}
        if path is not None and path.exists():
            self.records = {self._key(r): r for r in map(json.loads, path.read_text().splitlines())}

    @staticmethod
    def _key(record: dict) -> tuple:
        return record["set"], record["level"], record["method"], record["image"]

    def get(self, *key) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        self.records[self._key(record)] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def measure(
    set_name: str, level: int, images: dict[str, np.ndarray], methods: dict, crops: dict, records: ImageRecords
) -> list[dict]:
    """One row per method: mean PSNR over the images, wall-clock and CPU seconds per image (the process's CPU time,
    all its threads: the work done, whatever else the machine runs); the crops of the figure go to ``crops``."""
    task = SETS[set_name].task
    measured = {method: [] for method in methods}
    for name, clean in images.items():
        if task == "denoise":
            given, target, border = noisy(clean, set_name, name, level), clean, 0
        else:
            target, given = low_resolution(clean, level)
            border = level
        drawn = FIGURE_OF[task] == (set_name, level, name)
        shown = {}
        for method, (run, extra) in methods.items():
            record = None if extra or drawn else records.get(set_name, level, method, name)
            if record is None:
                start, cpu_start = time.perf_counter(), time.process_time()
                output = run(given) if task == "denoise" else run(given, (target.shape[1], target.shape[0]))
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                record = {"set": set_name, "level": level, "method": method, "image": name}
                record |= {"psnr": psnr(output, target, border), "seconds": seconds, "cpu_seconds": cpu_seconds}
                if not extra:
                    records.put(record)
                shown[method] = output
            measured[method].append(record)
        if drawn:
            _keep_crops(crops, set_name, level, name, shown, target)
    return [
        {
            "task": task,
            "set": set_name,
            LEVEL[task]: level,
            "method": method,
            "psnr": round(float(np.mean([r["psnr"] for r in measured[method]])), 3),
            "seconds_per_image": round(float(np.mean([r["seconds"] for r in measured[method]])), 4),
            "cpu_seconds_per_image": round(float(np.mean([r["cpu_seconds"] for r in measured[method]])), 4),
            "images": len(images),
            **extra,
        }
        for method, (_, extra) in methods.items()
    ]


def _keep_crops(crops: dict, set_name: str, level: int, name: str, shown: dict, target: np.ndarray, size=128) -> None:
    """The centre ``size`` x ``size`` of each output and of the clean image (colour: its luminance), as the task's
    figure: its title and each crop by its label."""
    task = SETS[set_name].task
    top, left = (target.shape[0] - size) // 2, (target.shape[1] - size) // 2
    cells = {**shown, "clean" if task == "denoise" else "original": target}
    crops[task] = (
        f"{set_name} {name}, {LEVEL[task]} {level}: centre {size} x {size}",
        {label: (c if c.ndim == 2 else luma(c))[top : top + size, left : left + size] for label, c in cells.items()},
    )


def draw_crops(path: Path, title: str, cells: dict[str, np.ndarray]) -> None:
    """The crops side by side, each labelled, grey on the 0-255 scale (values beyond it shown as its ends)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(2.6 * len(cells), 3.0))
    for axis, (label, crop) in zip(axes, cells.items()):
        axis.imshow(crop, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(label, fontsize=10)
        axis.axis("off")
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- outputs


def _key(row: dict) -> tuple:
    return row["task"], row["set"], row.get("sigma", row.get("factor")), row["method"]


def published_rows() -> list[dict]:
    return [
        {"task": task, "set": set_name, LEVEL[task]: level, "method": method, "psnr": value, "published": True}
        for task, methods in PUBLISHED.items()
        for method, figures in methods.items()
        for (set_name, level), value in figures.items()
    ]


def save_json(path: Path, measured: list[dict]) -> list[dict]:
    """Write the measured rows over those of the same key in ``path`` (other measured rows kept, the published
    ones written anew) and return all of them."""

    def order(row: dict) -> tuple:
        return row["task"], list(SETS).index(row["set"]), _key(row)[2]

    return merge_json(path, measured, _key, order, published_rows())


def table(rows: list[dict], task: str) -> str:
    """One line per set and level: each method's PSNR, then the measured methods' seconds per image."""
    level = LEVEL[task]
    lines, methods, timed = {}, [], []
    for row in (r for r in rows if r["task"] == task):
        label = row["method"] + (" (published)" if row.get("published") else "")
        line = lines.setdefault((list(SETS).index(row["set"]), row[level]), {"set": row["set"], level: row[level]})
        line[label] = row["psnr"]
        if "images" in row:
            line["images"] = row["images"]
        for field, unit in TIMES.items():
            if field in row and row["method"] != "noisy input":
                line[f"{row['method']} {unit}"] = row[field]
                timed += [] if f"{row['method']} {unit}" in timed else [f"{row['method']} {unit}"]
        methods += [] if label in methods else [label]
    measured = [m for m in methods if not m.endswith("(published)")]
    columns = ["set", level, "images", *measured, *(m for m in methods if m not in measured), *timed]
    formats = {c: ".2f" for c in methods} | {c: ".3g" for c in timed}
    return markdown_table([lines[k] for k in sorted(lines)], columns, formats).rstrip()


def agreement(rows: list[dict]) -> str:
    """Each measured figure less the published one of the same method, set and level."""
    published = {_key(r): r["psnr"] for r in rows if r.get("published")}
    differences = [
        f"{r['method']} {r['set']} {LEVEL[r['task']]} {_key(r)[2]} {r['psnr'] - published[_key(r)]:+.2f}"
        for r in rows
        if not r.get("published") and _key(r) in published
    ]
    return "Measured less published, dB: " + "; ".join(differences) + "." if differences else ""


def section(rows: list[dict], settings: str) -> str:
    aekit_rows = [r for r in rows if r["method"].startswith("aekit")]
    runs = {r["run"]: r for r in aekit_rows}
    bm3d = [r for r in rows if r["method"] == "BM3D" and "images" in r]
    # What BM3D took for the rows measured, and would take for every default level of the sets measured at some
    # (at each set's mean rate: its time hardly depends on sigma).
    wall, cpu = (sum(SETS[r["set"]].images * r[field] for r in bm3d) / 60 for field in TIMES)
    rates = {name: [r["cpu_seconds_per_image"] for r in bm3d if r["set"] == name] for name in SETS}
    full = {n: np.mean(rate) * SETS[n].images * len(SETS[n].levels) / 60 for n, rate in rates.items() if rate}
    return "\n".join(
        [
            HEADING,
            "",
            "`bench/photos_restore.py` (issue 27), on the data README's conventions. Denoising: Gaussian noise of "
            "sigma (0-255 scale) added without clipping, seeded per set, image and sigma, so every method gets the "
            "very same noisy image; PSNR (peak 255) of each output as it is against the clean image, the mean over "
            "the set. BM3D is the `bm3d` package (4.0.3; `bm3d_rgb` for colour) given the true sigma. "
            "Super-resolution on the luminance Y (BT.601, 16-235; a grey image is its own Y) in floating point: the "
            "clean Y cropped to a multiple of the factor, downscaled by Pillow's bicubic filter, enlarged by each "
            "method; PSNR after cropping `factor` pixels from each border. The published tables downscale with "
            "MATLAB's imresize (bicubic with antialiasing); Pillow's bicubic also widens its kernel when it shrinks, "
            "but is not bit for bit the same, so the measured bicubic row is the reference here and the published "
            "one is shown beside it. Rows marked (published) are the README's figures, not measured here; a dash is "
            "a figure not measured or not published. Every row is also in `bench/results/photos_restore.json`.",
            "",
            settings,
            "### Denoising",
            "",
            table(rows, "denoise"),
            "",
            agreement([r for r in rows if r["task"] == "denoise"]),
            "",
            f"BM3D took {cpu:.0f} min of CPU time for the rows measured here ({wall:.0f} min on the wall clock, the "
            "machine shared with other work: an upper bound; its library runs on both cores). At the same rates "
            "a run of every default level of "
            + ", ".join(f"{name} ({' '.join(map(str, SETS[name].levels))}: {m:.0f} min)" for name, m in full.items())
            + f" takes {sum(full.values()):.0f} min of CPU time."
            if bm3d
            else "BM3D was not measured in this run.",
            "",
            "### Super-resolution",
            "",
            table(rows, "upscale"),
            "",
            agreement([r for r in rows if r["task"] == "upscale"]),
            "",
            "### aekit's models",
            "",
            markdown_table(
                [r | {"train_minutes": r["train_seconds"] / 60} for r in runs.values()],
                ["run", "training", "parameters", "train_minutes"],
                {"train_minutes": ".1f"},
            ).rstrip()
            if runs
            else "No aekit run was measured yet: the `red` family is not on this branch; give its runs with "
            "`--denoise-run SIGMAS=RUN`, `--colour-run SIGMAS=RUN`, `--upscale-run RUN`, or train them with "
            "`--train`.",
            "",
            "Figures: `bench/figures/photos_restore_denoise.png` (BSD68 test001 at sigma 25) and "
            "`photos_restore_upscale.png` (Set5 butterfly at x4): centre crops of each method's output and of the "
            "clean image.",
            "",
        ]
    )


def settings_line(args: argparse.Namespace, started: float) -> str:
    return (
        "The rows come from runs of parts of this script, each replacing its own rows; the last run: "
        f"{datetime.date.today().isoformat()}, {device_name(torch.device('cpu'))}, torch "
        f"{torch.__version__}, aekit {aekit.__version__}; wall time {(time.perf_counter() - started) / 60:.1f} min:"
        "\n\n    python -m bench.photos_restore " + " ".join(sys.argv[1:]) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
