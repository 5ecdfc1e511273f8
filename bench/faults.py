"""Faults, measured: a fuzz campaign over every reader of outside bytes, a kill campaign over real training runs, and
campaigns of real `python -m aekit` commands at the edges of a run folder.

Fuzzing: the strategies and checks of tests/uses/test_fuzz.py, run for --cases cases per reader with a seeded (not
derandomized) Hypothesis, so each seed explores new cases. A case passes when the reader returns a valid result or
raises an AekitError with a one-line message, within the time and memory caps of the tests (no other exception, no
hang, no allocation beyond 1 GiB). Readers: IDX bytes and files, an MNIST folder, .npy, .npz, .csv, image folders,
JSON files, config.json, model.safetensors and checkpoint.pt of a run folder (and resuming from what is accepted), and
the dataset options a config.json holds.

Killing: a real `python -m aekit train` on the digits (a small VAE on the CPU, the settings of
tests/training/test_faults.py) is SIGKILLed at a seeded random moment (anywhere from start-up to the last figure),
resumed with --resume and killed again, up to --kills-per-trial times, then resumed to the end; new runs until --kills
kills have landed. After each kill: every file of the run folder must read completely (none half-written), no finished
epoch may be missing from the checkpoint (history.csv is watched while the run lives; the checkpoint's history must be
at least as long), and leftover `.*.tmp` files are counted. A run killed before its first epoch has no checkpoint:
`--resume` must refuse in one line, and the folder is started again. Each run's final weights must equal an
uninterrupted run's, bit for bit.

The edges (a tiny AE, 2 epochs, on the digits unless said otherwise; every trial a real `python -m aekit` process with
OMP_NUM_THREADS=1), one campaign per kind:

- exclusive: 2 and then 3 processes released at the same instant (they wait on a start file after their imports)
  into one --out, --edge-trials launches of each size, cycling through a fresh folder, an empty folder the user made
  and `--resume` of a run one epoch in: exactly one must proceed and the others be refused in one line.
- files: --out that is a file or lies below a file, for train, export-projector, compare (--out and --runs), denoise,
  compress and evaluate (RUN a file), all to be refused in one line; and a file-size limit (RLIMIT_FSIZE, each of
  --fsize-limits) on train (a first run and a resume), evaluate, export-projector, compare --runs (a first run and
  one reusing finished runs), denoise and compress. Read-only folders are not tried: we run as root, whom chmod does
  not stop (tests/training/test_run_folder.py uses a read-only bind mount instead).
- scale: uint8 .npy images of (n, h, w), (n, 1, h, w) and (n, h, w, 3) trained on, then denoised: the output must
  have the input's dtype and shape and agree with the Python API's reconstruct (0..255 units); the same images saved
  as float 0..255 values, given to denoise and compress with that run, must be refused in one line.
- headers: IDX files (plain and .gz) and .npy files whose headers claim 137 GB (of any shape, and of the run's 8x8
  images), given to denoise and compress, and a folder of 100-byte PNGs whose headers claim 12000 x 12000 and 9000 x
  9000 pixels, packed (--skip-bad --workers 2) and trained on, under a --memory-cap address-space limit: refused in
  one line that does not blame memory; the peak resident memory of each is reported.
- tables: a CSV of rank 3 plus 1% noise whose nine columns span 1e-3 to 1e5 (as tests/data/test_scale.py makes it)
  trained by PCA, AE and VAE, and AE and VAE with --no-standardize; prints the r2 of each.

Each trial is classified as proceeded (exit 0), refused in one line (exit 2, stderr exactly one line starting
"aekit: error:"), traceback ("Traceback" in stderr, or an exit status other than 0, 2 or 128+signal) or other (exit
2 in more lines, or a signal); after it the run folder must be usable: it holds a finished run (its files read
completely, the model loads, metrics.json and report.html are there), or `aekit train --resume --out F` finishes it,
or the same command run again (without the limit) succeeds. Commands that use a run must leave it finished, and one
refused only because of the limit must succeed when run again without it.

    python -m bench.faults [--campaigns fuzz,kill,exclusive,files,scale,headers,tables] [--cases 1000] [--kills 8]
        [--kills-per-trial 2] [--seed 0] [--edge-trials 4] [--fsize-limits 2K,16K,128K,1M] [--memory-cap 2G]

Prints the figures (kills survived out of N, fuzz cases run and malformed inputs rejected per reader, lost epochs,
half-written files; for the edges one row per kind: trials, proceeded, refused in one line, tracebacks, other exits,
folders left unusable, and the kind's own target) and exits 1 if any check failed or any target was missed.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, seed, settings
from PIL import Image
from safetensors.torch import load_file

from aekit.data import load_dataset
from aekit.errors import AekitError
from aekit.training import run_folder
from tests import test_fuzz as fuzz  # the strategies and checks live with the tests

ROOT = Path(__file__).resolve().parents[1]

TRAIN = "--model vae --hidden 32 --code-dim 4 --batch-size 16 --epochs 12 --no-progress --device cpu".split()
EPOCHS = 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
POLL_S = 0.02


# ---------------------------------------------------------------- fuzzing


def readers(run_dir: Path, small) -> list[tuple[str, object, object]]:
    """(name, strategy, check) for every reader; a check takes one drawn case."""
    compressor, valid_compressed = fuzz.compressor(small)
    config, weights, checkpoint = (
        (run_dir / name).read_bytes() for name in (run_folder.CONFIG, run_folder.WEIGHTS, run_folder.CHECKPOINT)
    )
    return [
        ("IDX bytes", fuzz.IDX_CASES, fuzz.check_idx),
        ("IDX files (.gz or plain)", fuzz.IDX_FILE_CASES, lambda case: fuzz.check_idx_file(*case)),
        ("MNIST folder", fuzz.MNIST_CASES, lambda case: fuzz.check_mnist_folder(*case)),
        (".npy", fuzz.NPY_CASES, lambda data: fuzz.check_array_file("fuzz.npy", data)),
        (".npz", fuzz.NPZ_CASES, lambda data: fuzz.check_array_file("fuzz.npz", data)),
        (".csv", fuzz.CSV_CASES, lambda data: fuzz.check_array_file("fuzz.csv", data)),
        ("image folder", fuzz.IMAGE_CASES, fuzz.check_image_folder),
        ("JSON file (read_json)", fuzz.JSON_CASES, fuzz.check_read_json),
        (
            "config.json (aekit.load)",
            fuzz.config_texts(config),
            lambda text: fuzz.check_run(run_dir, {run_folder.CONFIG: text}),
        ),
        (
            "model.safetensors (aekit.load)",
            fuzz.weights_files(weights),
            lambda data: fuzz.check_run(run_dir, {run_folder.WEIGHTS: data}),
        ),
        (
            "checkpoint.pt (load_checkpoint, resume)",
            fuzz.checkpoint_files(checkpoint),
            lambda data: fuzz.check_checkpoint(run_dir, small, data),
        ),
        ("dataset options of a config", fuzz.OPTION_CASES, lambda case: fuzz.check_dataset_options(*case)),
        (
            "compressed file (aekit decompress)",
            fuzz.compressed_files(valid_compressed),
            lambda data: fuzz.check_compressed(compressor, data),
        ),
    ]


def _counted(check, counts: Counter):
    """``check`` for one case, counting the cases run and how many were rejected (an AekitError) or accepted."""

    def case(value):
        result = check(value)
        counts["run"] += 1
        counts["rejected" if isinstance(result, AekitError) else "accepted"] += 1

    return case


def fuzz_campaign(cases: int, seed_value: int, folder: Path) -> tuple[list[dict], list[str]]:
    """Per reader: cases run, rejected (AekitError), accepted, seconds; and the failures."""
    small = fuzz.small_digits(load_dataset("digits"))
    run_dir = fuzz.make_run(folder / "fuzz-run", small)
    rows, failures = [], []
    for name, strategy, check in readers(run_dir, small):
        counts = Counter()
        test = settings(
            max_examples=cases,
            deadline=None,
            database=None,
            derandomize=False,
            print_blob=True,
            suppress_health_check=list(HealthCheck),
        )(seed(seed_value)(given(strategy)(_counted(check, counts))))
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow and NumPy warn about the damage they are handed
                test()
        except Exception as error:  # a failing case, reported with Hypothesis's shrunk example
            failures.append(f"{name}: {type(error).__name__}: {str(error)[:2000]}")
        rows.append(
            {
                "reader": name,
                "cases": counts["run"],
                "rejected": counts["rejected"],
                "accepted": counts["accepted"],
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            f"  {name}: {counts['run']} cases, {counts['rejected']} rejected, {counts['accepted']} accepted",
            file=sys.stderr,
        )
    return rows, failures


# ---------------------------------------------------------------- killing


def _train(out: Path, resume: bool) -> subprocess.Popen:
    argv = ["--resume", "--out", str(out), "--no-progress"] if resume else ["--out", str(out), *TRAIN]
    return subprocess.Popen(
        [sys.executable, "-m", "aekit", "train", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _epochs_in_history_csv(out: Path) -> int | None:
    """Rows in history.csv, or None when it is absent; a file that does not parse raises."""
    path = out / run_folder.HISTORY
    if not path.exists():
        return None
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert all(row["epoch"] == str(i + 1) for i, row in enumerate(rows)), rows
    return len(rows)


def _watch(process: subprocess.Popen, out: Path, kill_after: float | None) -> tuple[int, bool, str]:
    """Poll history.csv until ``kill_after`` seconds (then SIGKILL) or the process ends: the most finished epochs
    seen, whether the kill landed (the process may have just finished) and what it wrote to stderr."""
    started, seen = time.monotonic(), 0
    while process.poll() is None:
        seen = max(seen, _epochs_in_history_csv(out) or 0)
        if kill_after is not None and time.monotonic() - started >= kill_after:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(POLL_S)
    _, err = process.communicate()
    return seen, process.returncode == -signal.SIGKILL, err


def _png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()


def _html(path: Path) -> None:
    assert path.read_text().rstrip().endswith("</html>"), "the page ends early"


def _half_written(out: Path) -> list[str]:
    """The files of the run folder that do not read completely (there should be none: every write is atomic)."""
    checks = {
        run_folder.CONFIG: lambda path: run_folder.read_config(path.parent),
        run_folder.METRICS: run_folder.read_json,
        run_folder.WEIGHTS: load_file,
        run_folder.CHECKPOINT: run_folder.load_checkpoint,
        run_folder.HISTORY: lambda path: _epochs_in_history_csv(path.parent),
        "report.html": _html,
    }
    present = [(out / name, check) for name, check in checks.items() if (out / name).exists()]
    present += [(path, _png) for path in sorted(out.glob("figures/*.png"))]
    broken = []
    for path, check in present:
        try:
            check(path)
        except Exception as error:
            broken.append(f"{path.relative_to(out)} ({type(error).__name__}: {error})")
    return broken


def _timings(folder: Path) -> dict:
    """An uninterrupted run: its final weights, and when start-up ends, how long an epoch takes and the tail."""
    out = folder / "uninterrupted"
    started = time.monotonic()
    process = _train(out, resume=False)
    finished = {}
    while process.poll() is None:
        epochs = _epochs_in_history_csv(out) or 0
        finished.setdefault(epochs, time.monotonic() - started)
        time.sleep(POLL_S)
    total = time.monotonic() - started
    _, err = process.communicate()
    assert process.returncode == 0, err
    first, last = min(k for k in finished if k > 0), max(finished)
    per_epoch = (finished[last] - finished[first]) / max(last - first, 1)
    return {
        "weights": load_file(out / run_folder.WEIGHTS),
        "startup": max(finished[first] - first * per_epoch, 0),
        "per_epoch": per_epoch,
        "tail": total - finished[last],
        "total": total,
    }


def _refuses_to_resume(out: Path) -> bool:
    """Whether `--resume` on a run folder without a checkpoint exits 2 with one line telling to start again."""
    refused = subprocess.run(
        [sys.executable, "-m", "aekit", "train", "--resume", "--out", str(out)], capture_output=True, text=True, env=ENV
    )
    lines = refused.stderr.strip().splitlines()
    return refused.returncode == 2 and len(lines) == 1 and "delete the folder" in lines[0]


def _trial(out: Path, kills: int, rng: random.Random, reference: dict, tally: Counter, problems: list[str]) -> int:
    """Train in ``out``, SIGKILLed up to ``kills`` times at random moments and resumed each time, then to the end;
    returns the kills that landed (a run may finish before its moment comes)."""
    resume, landed = False, 0
    while True:
        done = len(run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["history"]) if resume else 0
        # Anywhere in this process's expected life: start-up, the epochs left, evaluation and figures.
        expected = reference["startup"] + (EPOCHS - done) * reference["per_epoch"] + reference["tail"]
        process = _train(out, resume)
        seen, killed, err = _watch(process, out, rng.uniform(0, expected) if landed < kills else None)
        if not killed:
            if process.returncode != 0:
                problems.append(f"{out.parent.name}: the last run exited {process.returncode}: {err.strip()}")
            return landed
        landed += 1
        tally["kills"] += 1
        broken = _half_written(out)
        tally["half-written files"] += len(broken)
        problems += [f"{out.parent.name}: half-written {name}" for name in broken]
        tally["leftover .tmp files"] += len(list(out.glob(".*.tmp")))
        tally["epochs finished before a kill"] += seen
        if (out / run_folder.CHECKPOINT).exists():
            tally["lost epochs"] += max(
                0, seen - len(run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["history"])
            )
            resume = True
            continue
        tally["lost epochs"] += seen
        tally["killed before the first epoch"] += 1
        if (out / run_folder.CONFIG).exists() and not _refuses_to_resume(out):
            problems.append(f"{out.parent.name}: --resume without a checkpoint did not refuse in one line")
        shutil.rmtree(out, ignore_errors=True)
        resume = False


def kill_campaign(kills: int, kills_per_trial: int, rng: random.Random, folder: Path) -> dict:
    """Trials until ``kills`` SIGKILLs have landed; each trial's final weights are compared with an uninterrupted
    run's."""
    reference = _timings(folder)
    print(
        f"  uninterrupted run: {reference['total']:.1f} s (start-up {reference['startup']:.1f} s, "
        f"{reference['per_epoch']:.2f} s per epoch, {reference['tail']:.1f} s after the last epoch)",
        file=sys.stderr,
    )
    tally, problems, trial = Counter(), [], 0
    while tally["kills"] < kills and trial < 3 * kills:
        out = folder / f"trial-{trial}" / "run"
        out.parent.mkdir()
        before = len(problems)
        landed = _trial(out, min(kills_per_trial, kills - tally["kills"]), rng, reference, tally, problems)
        weights = load_file(out / run_folder.WEIGHTS)
        same = weights.keys() == reference["weights"].keys() and all(
            torch.equal(weights[k], v) for k, v in reference["weights"].items()
        )
        if not same:
            problems.append(f"{out.parent.name}: the final weights differ from the uninterrupted run's")
        tally["kills survived"] += landed if same and len(problems) == before else 0
        tally["trials"] += 1
        print(f"  trial {trial}: {landed} kills, final weights {'identical' if same else 'DIFFERENT'}", file=sys.stderr)
        trial += 1
    return {"tally": tally, "problems": problems}


# ---------------------------------------------------------------- the edges

AE = ["--model", "ae", "--hidden", "16", "--code-dim", "2", "--epochs", "2", "--device", "cpu", "--no-progress"]
COMPARE = [
    "--models",
    "pca,ae",
    "--code-dim",
    "2",
    "--hidden",
    "16",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]
PROCEEDED, REFUSED, TRACEBACK, OTHER = "proceeded", "refused in one line", "traceback", "other exit"
COMMAND_SECONDS = 300  # a command taking longer is a hang
GO = """import os, sys, time
from aekit.jobs import workflow
from aekit.cli import main
open(f"{sys.argv[1]}.{os.getpid()}", "w").close()  # ready
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
sys.exit(main(sys.argv[2:]))
"""


class Done:
    """A finished `aekit` process: its exit status (negative: the signal that ended it), output, peak resident
    memory (KiB) and how it ended."""

    def __init__(self, argv: list[str], status: int, out: str, err: str, peak_kib: int):
        self.argv, self.status, self.out, self.err, self.peak_kib = argv, status, out, err, peak_kib
        lines = err.strip().splitlines()
        if "Traceback" in err:
            self.outcome = TRACEBACK
        elif status == 0:
            self.outcome = PROCEEDED
        elif status == 2:
            self.outcome = REFUSED if len(lines) == 1 and lines[0].startswith("aekit: error:") else OTHER
        elif status < 0 or status > 128:
            self.outcome = OTHER  # a signal (none is sent in these campaigns)
        else:
            self.outcome = TRACEBACK

    def tail(self) -> str:
        text = " | ".join(self.err.strip().splitlines()[-3:])
        return f"exit {self.status}: {text[-600:]}"


def _limits(fsize: int | None, address_space: int | None):
    if fsize is None and address_space is None:
        return None

    def limit():
        import resource

        if fsize is not None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return limit


class _Started:
    """An `aekit` process writing its output to files (so that nothing blocks on a full pipe)."""

    def __init__(self, argv, prefix=(), fsize=None, address_space=None):
        self.argv = [str(a) for a in argv]
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, *prefix, *self.argv],
            stdout=self.out,
            stderr=self.err,
            text=True,
            env=ENV,
            preexec_fn=_limits(fsize, address_space),
        )

    def wait(self) -> Done:
        """Reaped with wait4, for the process's own peak resident memory; killed past COMMAND_SECONDS."""
        pid, deadline = self.process.pid, time.monotonic() + COMMAND_SECONDS
        while True:
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                reaped, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)
        self.process.returncode = code  # reaped here: Popen must not wait for it again
        texts = []
        for file in (self.out, self.err):
            file.seek(0)
            texts.append(file.read())
            file.close()
        return Done(self.argv, code, texts[0], texts[1], usage.ru_maxrss)


def aekit(*argv, fsize: int | None = None, address_space: int | None = None) -> Done:
    """`python -m aekit ARGV`, optionally under a file-size or an address-space limit (bytes)."""
    return _Started(argv, ("-m", "aekit"), fsize, address_space).wait()


def _finished(out: Path) -> str | None:
    """None where ``out`` holds a finished run (every file reads completely, the model loads, metrics.json and
    report.html are there); else what is wrong."""
    if not out.is_dir():
        return f"{out.name} is not a folder"
    missing = [
        name
        for name in (run_folder.CONFIG, run_folder.WEIGHTS, run_folder.METRICS, "report.html")
        if not (out / name).is_file()
    ]
    if missing:
        return f"{out.name} lacks {', '.join(missing)}"
    broken = _half_written(out)
    if broken:
        return f"{out.name}: half-written {', '.join(broken)}"
    try:
        run_folder.load(out)
    except Exception as error:  # noqa: BLE001 (whatever it is, the folder is not usable)
        return f"{out.name} does not load: {type(error).__name__}: {error}"
    return None


def _recovered(out: Path, argv: list) -> str | None:
    """None where the run folder ``out`` is usable: it holds a finished run, or `train --resume` finishes it, or
    ``argv`` run again (without any limit) finishes it; else what was tried."""
    wrong = _finished(out)
    if wrong is None:
        return None
    tried = [wrong]
    if run_folder.holds_run(out):
        done = aekit("train", "--resume", "--out", out, "--no-progress")
        if done.status == 0 and _finished(out) is None:
            return None
        tried.append(f"--resume {done.outcome} ({done.tail()}), then {_finished(out)}")
    done = aekit(*argv)
    if done.status == 0 and _finished(out) is None:
        return None
    tried.append(f"the same command again {done.outcome} ({done.tail()}), then {_finished(out)}")
    return "; ".join(tried)


def _still_finished(run: Path, done: Done, again: bool = True) -> str | None:
    """For a command that uses ``run``: None where the run is still finished and, if the command did not proceed
    and ``again``, the same command (without the limit) succeeds."""
    wrong = _finished(run)
    if wrong is not None:
        return f"the run it used: {wrong}"
    if again and done.status != 0:
        rerun = aekit(*done.argv)
        if rerun.status != 0:
            return f"the same command again without the limit: {rerun.outcome} ({rerun.tail()})"
    return None


def _runs_usable(folder: Path, kind: Kind, label: str) -> str | None:
    """None where every run folder in ``folder`` (a compare --runs folder) is finished, or `train --resume`
    finishes it; one left unfinished after compare succeeded is noted."""
    wrong = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_dir() and _finished(path) is not None:
            kind.notes.append(f"{label}: compare succeeded (run again without the limit) leaving {_finished(path)}")
            problem = _recovered(path, ["train", "--resume", "--out", path, "--no-progress"])
            if problem is not None:
                wrong.append(problem)
    return "; ".join(wrong) or None


class Kind:
    """One edge campaign's tally: its trials by outcome, the folders they left unusable, the trials whose outcome
    was not the expected one, and the kind's own target."""

    def __init__(self, name: str):
        self.name, self.counts, self.problems, self.target, self.met = name, Counter(), [], "", True
        self.notes: list[str] = []  # what is worth knowing but misses no target
        print(name, file=sys.stderr)

    def trial(self, label: str, done: Done, expect: str | None = None, unusable: str | None = None) -> None:
        """Counts ``done``; ``expect`` (PROCEEDED or REFUSED) where only one outcome is right; ``unusable`` what is
        wrong with the folder it left, if anything."""
        self.counts["trials"] += 1
        self.counts[done.outcome] += 1
        if expect is not None and done.outcome != expect:
            self.counts["unexpected"] += 1
            self.problems.append(f"{self.name}, {label}: {done.outcome} where {expect} was expected ({done.tail()})")
        elif done.outcome in (TRACEBACK, OTHER):
            self.problems.append(f"{self.name}, {label}: {done.outcome} ({done.tail()})")
        if unusable is not None:
            self.counts["unusable"] += 1
            self.problems.append(f"{self.name}, {label}: left unusable: {unusable}")
        line = done.err.strip().splitlines()[-1:] if done.outcome != PROCEEDED else []
        print(
            f"  {label}: {done.outcome}{' (' + line[0][:160] + ')' if line else ''}"
            f"{'; LEFT UNUSABLE' if unusable else ''}",
            file=sys.stderr,
        )

    def miss(self, problem: str) -> None:
        self.met = False
        self.problems.append(f"{self.name}: {problem}")

    def ok(self) -> bool:
        c = self.counts
        return self.met and not (c[TRACEBACK] or c[OTHER] or c["unusable"] or c["unexpected"])


def _copy(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def _fixtures(folder: Path) -> dict:
    """What the edge campaigns start from: a finished tiny run, one stopped after its first epoch, a compare --runs
    folder of finished runs, the digits' test images as .npy and a plain file."""
    fixtures = {
        "run": folder / "finished",
        "half": folder / "one-epoch",
        "compared": folder / "compared",
        "images": folder / "images.npy",
        "file": folder / "a-file",
    }
    for argv in (
        ["train", "--out", fixtures["run"], *AE],
        ["train", "--out", fixtures["half"], *AE[:-5], "--epochs", "1", *AE[-3:]],
        ["compare", "--out", folder / "comparison", "--runs", fixtures["compared"], *COMPARE],
    ):
        done = aekit(*argv)
        assert done.status == 0, (argv, done.err)
    import numpy as np

    np.save(fixtures["images"], load_dataset("digits").x_test)
    fixtures["file"].write_text("a file, not a folder\n")
    return fixtures


def exclusive_campaign(launches: int, fixtures: dict, folder: Path) -> Kind:
    """``launches`` launches of 2, then of 3, processes into one --out at the same instant."""
    kind, alone, total = Kind("exclusive run folder"), 0, 0
    ways = ("a new folder", "a folder the user made", "--resume")
    for n in (2, 3):
        for i in range(launches):
            way, trial = ways[i % len(ways)], folder / f"exclusive-{n}-{i}"
            out = trial / "run"
            trial.mkdir()
            if way == "a folder the user made":
                out.mkdir()
            if way == "--resume":
                _copy(fixtures["half"], out)
                argv = ["train", "--resume", "--out", out, "--epochs", "2", "--no-progress"]
            else:
                argv = ["train", "--out", out, *AE]
            go = trial / "go"
            started = [_Started(argv, ("-c", GO, str(go))) for _ in range(n)]
            deadline = time.monotonic() + 60
            while (
                len(list(trial.glob("go.*"))) < n
                and time.monotonic() < deadline
                and all(s.process.poll() is None for s in started)
            ):
                time.sleep(0.01)  # until every process has done its imports and waits
            go.touch()
            dones = [s.wait() for s in started]
            unusable = _recovered(out, argv)
            for j, done in enumerate(dones):
                kind.trial(f"{n} at once, {way}, launch {i}, process {j}", done, unusable=unusable if j == 0 else None)
            outcomes = sorted(done.outcome for done in dones)
            total += 1
            if outcomes == sorted([PROCEEDED] + [REFUSED] * (n - 1)):
                alone += 1
            else:
                kind.miss(f"{n} at once, {way}, launch {i}: {outcomes}")
    kind.target = f"exactly one proceeded, the others refused in one line: {alone} of {total} launches"
    return kind


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def _named(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def files_campaign(limits: list[int], fixtures: dict, folder: Path) -> Kind:
    """Outputs where a file is, or below one; then a file-size limit on every command that writes."""
    kind, refused, blocked = Kind("file-system trouble"), 0, 0
    blocker = fixtures["file"]
    content = blocker.read_bytes()
    for where in ("a file", "below a file"):
        out = blocker if where == "a file" else blocker / "below"
        trial = folder / f"blocked-{where.replace(' ', '-')}"
        trial.mkdir()
        run = _copy(fixtures["run"], trial / "run")
        cases = [
            ("train --out", ["train", "--out", out, *AE], None),
            ("export-projector --out", ["export-projector", run, "--out", out], run),
            ("compare --out", ["compare", "--out", out, "--runs", trial / "runs", *COMPARE], None),
            ("compare --runs", ["compare", "--out", trial / "comparison", "--runs", out, *COMPARE], None),
            ("denoise --out", ["denoise", run, fixtures["images"], "--out", out / "x.npy"], run),
            ("compress --out", ["compress", run, fixtures["images"], "--bits", "8", "--out", out / "x.aekc"], run),
            ("evaluate RUN", ["evaluate", out], None),
        ]
        for label, argv, used in cases:
            done = aekit(*argv)
            wrong = [] if blocker.is_file() and blocker.read_bytes() == content else ["the file was changed"]
            if used is not None and _finished(used) is not None:
                wrong.append(f"the run it used: {_finished(used)}")
            wrong += [f"{p.name} was written" for p in (trial / "runs", trial / "comparison") if p.exists()]
            kind.trial(f"{label} {where}", done, REFUSED, "; ".join(wrong) or None)
            blocked += 1
            refused += done.outcome == REFUSED
    for limit in limits:
        size = _named(limit)
        trial = folder / f"limit-{limit}"
        trial.mkdir()
        out = trial / "first"
        argv = ["train", "--out", out, *AE]
        done = aekit(*argv, fsize=limit)
        kind.trial(f"train, a first run, files up to {size}", done, unusable=_recovered(out, argv))
        out = _copy(fixtures["half"], trial / "resumed")
        argv = ["train", "--resume", "--out", out, "--epochs", "2", "--no-progress"]
        done = aekit(*argv, fsize=limit)
        kind.trial(f"train --resume, files up to {size}", done, unusable=_recovered(out, argv))
        run = _copy(fixtures["run"], trial / "run")
        done = aekit("evaluate", run, fsize=limit)
        kind.trial(f"evaluate, files up to {size}", done, unusable=_recovered(run, ["evaluate", run]))
        for label, argv in (
            ("export-projector", ["export-projector", run, "--out", trial / "projector"]),
            ("denoise", ["denoise", run, fixtures["images"], "--out", trial / "denoised.npy"]),
            ("compress", ["compress", run, fixtures["images"], "--bits", "8", "--out", trial / "compressed.aekc"]),
        ):
            done = aekit(*argv, fsize=limit)
            kind.trial(f"{label}, files up to {size}", done, unusable=_still_finished(run, done))
        for label, runs_dir in (
            ("compare --runs, a first run", trial / "runs"),
            ("compare --runs reusing finished runs", _copy(fixtures["compared"], trial / "compared")),
        ):
            argv = ["compare", "--out", trial / f"comparison-{runs_dir.name}", "--runs", runs_dir, *COMPARE]
            done = aekit(*argv, fsize=limit)
            wrong = None
            if done.status != 0:
                again = aekit(*argv)
                wrong = None if again.status == 0 else f"the same command again: {again.outcome} ({again.tail()})"
            kind.trial(
                f"{label}, files up to {size}",
                done,
                unusable=wrong or _runs_usable(runs_dir, kind, f"{label}, files up to {size}"),
            )
    kind.target = f"outputs where a file is or below one refused: {refused} of {blocked}; read-only: not tried (root)"
    if refused != blocked:
        kind.met = False
    return kind


def scale_campaign(fixtures: dict, folder: Path) -> Kind:
    """uint8 images trained on and denoised in three layouts; the same as float 0..255 values refused."""
    import numpy as np

    import aekit as api

    kind, right, layouts = (
        Kind("one scale"),
        0,
        {"(n, h, w)": (200, 10, 10), "(n, 1, h, w)": (200, 1, 10, 10), "(n, h, w, 3)": (200, 10, 10, 3)},
    )
    rng = np.random.default_rng(0)
    for name, shape in layouts.items():
        trial = folder / f"scale-{len(shape)}-{shape[-1]}"
        trial.mkdir()
        ramp = np.linspace(0, 255, 10)[None, :, None]
        pixels = (ramp * rng.random((200, 1, 1)) + rng.integers(0, 20, (200, 10, 10))).clip(0, 255).astype(np.uint8)
        pixels = pixels.reshape(shape) if len(shape) != 4 or shape[-1] != 3 else np.stack([pixels] * 3, -1)
        np.save(trial / "pixels.npy", pixels)
        out = trial / "run"
        argv = ["train", "--out", out, "--dataset", trial / "pixels.npy", *AE]
        done = aekit(*argv)
        kind.trial(f"train on uint8 {name}", done, PROCEEDED, _recovered(out, argv))
        done = aekit("denoise", out, trial / "pixels.npy", "--out", trial / "clean.npy")
        kind.trial(f"denoise uint8 {name}", done, PROCEEDED, _still_finished(out, done))
        if done.status == 0:
            clean = np.load(trial / "clean.npy")
            expected = api.load(out).reconstruct(pixels)
            if clean.dtype != pixels.dtype or clean.shape != pixels.shape:
                kind.miss(f"denoise uint8 {name}: gave {clean.dtype} {clean.shape} for {pixels.dtype} {pixels.shape}")
            elif np.abs(clean.astype(int) - expected.astype(int)).max() > 1 or clean.max() <= 1:
                kind.miss(
                    f"denoise uint8 {name}: not in 0..255 units (max {clean.max()}, the Python API's "
                    f"reconstruct differs by up to {np.abs(clean.astype(int) - expected.astype(int)).max()})"
                )
            else:
                right += 1
        np.save(trial / "floats.npy", pixels.astype(np.float32))  # 0..255 saved as floats
        for command, extra, output in (("denoise", [], "f.npy"), ("compress", ["--bits", "8"], "f.aekc")):
            done = aekit(command, out, trial / "floats.npy", *extra, "--out", trial / output)
            wrong = _still_finished(out, done, again=False) or (
                f"{output} was written" if (trial / output).exists() else None
            )
            kind.trial(f"{command} float 0..255 {name}", done, REFUSED, wrong)
    kind.target = f"uint8 out of denoise in the input's dtype, shape and units: {right} of {len(layouts)}"
    kind.met = kind.met and right == len(layouts)
    return kind


def headers_campaign(cap: int, fixtures: dict, folder: Path) -> Kind:
    """IDX (plain, .gz) and .npy inputs whose headers claim 137 GB, given to denoise and compress, and a folder of PNGs
    whose headers claim 12000 x 12000 and 9000 x 9000 pixels, packed (--skip-bad --workers 2) and trained on, under a
    memory cap."""
    import gzip
    import io

    kind, peak = Kind("lying headers in the apps' inputs and image folders"), 0
    idx_any = bytes([0, 0, 8, 2]) + (10**9).to_bytes(4, "big") + (137).to_bytes(4, "big") + bytes(64)
    n_8x8 = 137 * 10**9 // 64  # 8x8 images, the run's size: 137 GB
    idx_8x8 = bytes([0, 0, 8, 3]) + n_8x8.to_bytes(4, "big") + (8).to_bytes(4, "big") * 2 + bytes(64)
    files = {
        "forged-ubyte": idx_any,
        "forged-ubyte.gz": gzip.compress(idx_any, mtime=0),
        "forged-8x8-ubyte": idx_8x8,
        "forged-8x8-ubyte.gz": gzip.compress(idx_8x8, mtime=0),
        "forged.npy": fuzz.npy_header("|u1", False, (10**9, 137)) + bytes(64),
        "forged-8x8.npy": fuzz.npy_header("<f4", False, (137 * 10**9 // 256, 1, 8, 8)) + bytes(64),
    }
    trial = folder / "headers"
    trial.mkdir()
    run = _copy(fixtures["run"], trial / "run")
    trials = []
    for name, data in files.items():
        (trial / name).write_bytes(data)
        for command, extra, output in (("denoise", [], "out.npy"), ("compress", ["--bits", "8"], "out.aekc")):
            trials.append((f"{command} {name}", [command, run, trial / name, *extra, "--out", trial / output], output))
    pngs, png = trial / "forged-pngs", io.BytesIO()
    pngs.mkdir()
    Image.new("RGB", (2, 2)).save(png, format="PNG")
    for i, side in enumerate((12000, 12000, 12000, 9000, 9000, 9000)):  # over Pillow's limit, and under it
        (pngs / f"{i}.png").write_bytes(fuzz.resized_png(png.getvalue(), side, side))
    store, images_run = trial / "forged.store", trial / "forged-run"
    trials += [
        ("pack forged-pngs", ["pack", pngs, "--out", store, "--skip-bad", "--workers", "2", "--no-progress"], store),
        (
            "train forged-pngs",
            ["train", "--dataset", pngs, "--out", images_run, "--epochs", "1", "--no-progress"],
            images_run,
        ),
    ]
    for label, argv, output in trials:
        done = aekit(*argv, address_space=cap)
        peak = max(peak, done.peak_kib)
        wrong = _still_finished(run, done, again=False) or (
            f"{output} was written" if (trial / output).exists() else None
        )
        kind.trial(label, done, REFUSED, wrong)
        if done.outcome == REFUSED and any(w in done.err.lower() for w in ("memory", "allocate")):
            kind.miss(f"{label}: the refusal blames memory, so the claim was believed: {done.err}")
    kind.target = (
        f"refused in one line: {kind.counts[REFUSED]} of {kind.counts['trials']}; peak resident "
        f"{peak / 1024:.0f} MiB under a {_named(cap)} address-space cap"
    )
    return kind


def tables_campaign(folder: Path) -> Kind:
    """A CSV of wild column scales trained from the command line: PCA, AE, VAE, and AE and VAE unstandardized."""
    import json

    import numpy as np

    kind, r2 = Kind("tables from the command line"), []
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 3))
    columns = [z @ rng.normal(size=3) * 10.0**k + rng.normal(size=600) * 0.01 * 10.0**k for k in range(-3, 6)]
    table = folder / "wild.csv"
    np.savetxt(table, np.stack(columns, 1), delimiter=",", header=",".join(f"c{i}" for i in range(9)), comments="")
    common = [
        "--dataset",
        table,
        "--code-dim",
        "3",
        "--hidden",
        "32",
        "--epochs",
        "30",
        "--device",
        "cpu",
        "--no-progress",
    ]
    for label, model, extra, expect in (
        ("PCA", "pca", [], PROCEEDED),
        ("AE", "ae", [], PROCEEDED),
        ("VAE", "vae", [], PROCEEDED),
        ("AE --no-standardize", "ae", ["--no-standardize"], PROCEEDED),
        ("VAE --no-standardize", "vae", ["--no-standardize"], None),
    ):
        out = folder / f"table-{label.replace(' ', '')}"
        argv = ["train", "--model", model, "--out", out, *extra, *common]
        done = aekit(*argv)
        if done.status == 0:
            value = json.loads(done.out).get("r2")
            r2.append(f"{label} {value:.4g}" if isinstance(value, float) else f"{label} no r2")
            if not isinstance(value, float):
                kind.miss(f"{label}: no r2 in the metrics")
            wrong = _recovered(out, argv)
        else:  # a refusal (the NaN of an unstandardized VAE): nothing left, or the last good checkpoint
            r2.append(f"{label} refused")
            wrong = (
                None
                if not out.exists() or run_folder.holds_run(out)
                else f"left {sorted(p.name for p in out.iterdir())} without a checkpoint"
            )
        kind.trial(label, done, expect, wrong)
    kind.target = "r2: " + ", ".join(r2)
    return kind


EDGES = {
    "exclusive": exclusive_campaign,
    "files": files_campaign,
    "scale": scale_campaign,
    "headers": headers_campaign,
    "tables": tables_campaign,
}


# ---------------------------------------------------------------- report

CAMPAIGNS = ("fuzz", "kill", *EDGES)


def _campaigns(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CAMPAIGNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown campaign {', '.join(unknown) or '(none)'}; choose from {','.join(CAMPAIGNS)}"
        )
    return names


def _sizes(text: str) -> list[int]:
    try:
        return [_size(part) for part in text.split(",") if part.strip()]
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes such as 2K,16K,128K,1M") from None


def edge_table(kinds: list[Kind]) -> bool:
    """Prints one row per kind; whether every target was met."""
    columns = ("trials", PROCEEDED, REFUSED, TRACEBACK, OTHER, "unusable")
    print(
        "| kind | trials | proceeded | refused in one line | tracebacks (target 0) | other exits (target 0) | "
        "folders left unusable (target 0) | the kind's own target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in kinds:
        print(f"| {kind.name} | " + " | ".join(str(kind.counts[c]) for c in columns) + f" | {kind.target} |")
    print("| all | " + " | ".join(str(sum(k.counts[c] for k in kinds)) for c in columns) + " | |\n")
    unexpected = sum(k.counts["unexpected"] for k in kinds)
    print(
        f"trials whose outcome was not the one expected: {unexpected}; targets met: "
        f"{sum(k.ok() for k in kinds)} of {len(kinds)} kinds"
    )
    return all(k.ok() for k in kinds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--campaigns",
        type=_campaigns,
        default=list(CAMPAIGNS),
        help=f"comma-separated, from {','.join(CAMPAIGNS)} (default: all)",
    )
    parser.add_argument("--cases", type=int, default=1000, help="fuzz cases per reader (default: 1000)")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs to land in all (default: 8)")
    parser.add_argument(
        "--kills-per-trial", type=int, default=2, help="kills per training run before it may finish (default: 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the fuzzing and the kill moments (default: 0)")
    parser.add_argument(
        "--edge-trials", type=int, default=4, help="exclusive: launches of 2 and of 3 processes each (default: 4)"
    )
    parser.add_argument(
        "--fsize-limits",
        type=_sizes,
        default=[2 << 10, 16 << 10, 128 << 10, 1 << 20],
        help="files: the file-size limits to try, e.g. 2K,16K (default: 2K,16K,128K,1M)",
    )
    parser.add_argument(
        "--memory-cap",
        type=_size,
        default=2 << 30,
        help="headers: the address-space limit of each command (default: 2G)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows, failures, kills, kinds = None, [], None, []
    with tempfile.TemporaryDirectory(prefix="aekit-faults-") as tmp:
        folder = Path(tmp)
        if "fuzz" in args.campaigns:
            print("fuzzing", file=sys.stderr)
            rows, failures = fuzz_campaign(args.cases, args.seed, folder)
        if "kill" in args.campaigns:
            print("killing", file=sys.stderr)
            kills = kill_campaign(args.kills, args.kills_per_trial, random.Random(args.seed), folder)
        edges = [name for name in args.campaigns if name in EDGES]
        if edges:
            print("the edges: fixtures", file=sys.stderr)
            fixtures = _fixtures(folder / "fixtures")
            extra = {"exclusive": (args.edge_trials,), "files": (args.fsize_limits,), "headers": (args.memory_cap,)}
            for name in edges:
                (folder / name).mkdir()
                takes_fixtures = name != "tables"
                kinds.append(EDGES[name](*extra.get(name, ()), *((fixtures,) if takes_fixtures else ()), folder / name))

    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({os.cpu_count()} cores), torch "
        f"{torch.__version__}; seed {args.seed}; wall time {(time.perf_counter() - started) / 60:.1f} min\n"
    )
    ok = True
    if rows is not None:
        print("| reader | cases run | malformed inputs rejected | accepted as valid | seconds |")
        print("| --- | --- | --- | --- | --- |")
        for row in rows:
            print(
                f"| {row['reader']} | {row['cases']} | {row['rejected']} | {row['accepted']} | {row['seconds']:.0f} |"
            )
        total = {k: sum(row[k] for row in rows) for k in ("cases", "rejected", "accepted")}
        print(f"| all | {total['cases']} | {total['rejected']} | {total['accepted']} | |\n")
        print(
            f"fuzz cases run: {total['cases']} ({args.cases} asked per reader, {len(rows)} readers); "
            f"malformed inputs rejected: {total['rejected']}; failures: {len(failures)}"
        )
        ok = ok and not failures
    if kills is not None:
        tally = kills["tally"]
        print(
            f"kills survived: {tally['kills survived']} of {tally['kills']} (SIGKILL at random moments in "
            f"{tally['trials']} training runs; {tally['killed before the first epoch']} before the first epoch "
            "ended)"
        )
        print(
            f"lost epochs: {tally['lost epochs']} (of {tally['epochs finished before a kill']} finished before a kill)"
        )
        print(
            f"half-written files: {tally['half-written files']}; leftover .*.tmp files: {tally['leftover .tmp files']}"
        )
        ok = (
            ok
            and not kills["problems"]
            and tally["kills survived"] == tally["kills"]
            and tally["lost epochs"] == 0
            and tally["half-written files"] == 0
        )
        failures = failures + kills["problems"]
    if kinds:
        if rows is not None or kills is not None:
            print()
        ok = edge_table(kinds) and ok
        failures = failures + [problem for kind in kinds for problem in kind.problems]
    for note in (note for kind in kinds for note in kind.notes):
        print(f"note: {note}")
    for problem in failures:
        print(f"FAILED: {problem}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
