"""Faults, measured: a fuzz campaign over every reader of outside bytes and a kill campaign over real training runs.

Fuzzing: the strategies and checks of tests/test_fuzz.py, run for --cases cases per reader with a seeded (not
derandomized) Hypothesis, so each seed explores new cases. A case passes when the reader returns a valid result or
raises an AekitError with a one-line message, within the time and memory caps of the tests (no other exception, no
hang, no allocation beyond 1 GiB). Readers: IDX bytes and files, an MNIST folder, .npy, .npz, .csv, image folders,
JSON files, config.json, model.safetensors and checkpoint.pt of a run folder (and resuming from what is accepted), and
the dataset options a config.json holds.

Killing: a real `python -m aekit train` on the digits (a small VAE on the CPU, the settings of tests/test_faults.py)
is SIGKILLed at a seeded random moment (anywhere from start-up to the last figure), resumed with --resume and killed
again, up to --kills-per-trial times, then resumed to the end; new runs until --kills kills have landed. After each
kill: every file of the run folder must read completely (none half-written), no finished epoch may be missing from
the checkpoint (history.csv is watched while the run lives; the checkpoint's history must be at least as long), and
leftover `.*.tmp` files are counted. A run killed before its first epoch has no checkpoint: `--resume` must refuse in
one line, and the folder is started again. Each run's final weights must equal an uninterrupted run's, bit for bit.

    python bench/faults.py [--cases 1000] [--kills 8] [--kills-per-trial 2] [--seed 0]

Prints the figures (kills survived out of N, fuzz cases run and malformed inputs rejected per reader, lost epochs,
half-written files) and exits 1 if any check failed.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import test_fuzz as fuzz  # noqa: E402  (the strategies and checks live with the tests)

from aekit import runs  # noqa: E402
from aekit.data import load_dataset  # noqa: E402
from aekit.errors import AekitError  # noqa: E402

TRAIN = ["--model", "vae", "--hidden", "32", "--code-dim", "4", "--batch-size", "16", "--epochs", "12",
         "--no-progress", "--device", "cpu"]
EPOCHS = 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
POLL_S = 0.02


# ---------------------------------------------------------------- fuzzing

def readers(run_dir: Path, small) -> list[tuple[str, object, object]]:
    """(name, strategy, check) for every reader; a check takes one drawn case."""
    compressor, valid_compressed = fuzz.compressor(small)
    config, weights, checkpoint = ((run_dir / name).read_bytes() for name in (runs.CONFIG, runs.WEIGHTS,
                                                                             runs.CHECKPOINT))
    return [
        ("IDX bytes", fuzz.IDX_CASES, fuzz.check_idx),
        ("IDX files (.gz or plain)", fuzz.IDX_FILE_CASES, lambda case: fuzz.check_idx_file(*case)),
        ("MNIST folder", fuzz.MNIST_CASES, lambda case: fuzz.check_mnist_folder(*case)),
        (".npy", fuzz.NPY_CASES, lambda data: fuzz.check_array_file("fuzz.npy", data)),
        (".npz", fuzz.NPZ_CASES, lambda data: fuzz.check_array_file("fuzz.npz", data)),
        (".csv", fuzz.CSV_CASES, lambda data: fuzz.check_array_file("fuzz.csv", data)),
        ("image folder", fuzz.IMAGE_CASES, fuzz.check_image_folder),
        ("JSON file (read_json)", fuzz.JSON_CASES, fuzz.check_read_json),
        ("config.json (aekit.load)", fuzz.config_texts(config),
         lambda text: fuzz.check_run(run_dir, {runs.CONFIG: text})),
        ("model.safetensors (aekit.load)", fuzz.weights_files(weights),
         lambda data: fuzz.check_run(run_dir, {runs.WEIGHTS: data})),
        ("checkpoint.pt (load_checkpoint, resume)", fuzz.checkpoint_files(checkpoint),
         lambda data: fuzz.check_checkpoint(run_dir, small, data)),
        ("dataset options of a config", fuzz.OPTION_CASES, lambda case: fuzz.check_dataset_options(*case)),
        ("compressed file (aekit decompress)", fuzz.compressed_files(valid_compressed),
         lambda data: fuzz.check_compressed(compressor, data)),
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
        test = settings(max_examples=cases, deadline=None, database=None, derandomize=False, print_blob=True,
                        suppress_health_check=list(HealthCheck))(seed(seed_value)(given(strategy)(
                            _counted(check, counts))))
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow and NumPy warn about the damage they are handed
                test()
        except Exception as error:  # a failing case, reported with Hypothesis's shrunk example
            failures.append(f"{name}: {type(error).__name__}: {str(error)[:2000]}")
        rows.append({"reader": name, "cases": counts["run"], "rejected": counts["rejected"],
                     "accepted": counts["accepted"], "seconds": time.perf_counter() - started})
        print(f"  {name}: {counts['run']} cases, {counts['rejected']} rejected, {counts['accepted']} accepted",
              file=sys.stderr)
    return rows, failures


# ---------------------------------------------------------------- killing

def _train(out: Path, resume: bool) -> subprocess.Popen:
    argv = ["--resume", "--out", str(out), "--no-progress"] if resume else ["--out", str(out), *TRAIN]
    return subprocess.Popen([sys.executable, "-m", "aekit", "train", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _epochs_in_history_csv(out: Path) -> int | None:
    """Rows in history.csv, or None when it is absent; a file that does not parse raises."""
    path = out / runs.HISTORY
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
    checks = {runs.CONFIG: lambda path: runs.read_config(path.parent), runs.METRICS: runs.read_json,
              runs.WEIGHTS: load_file, runs.CHECKPOINT: runs.load_checkpoint,
              runs.HISTORY: lambda path: _epochs_in_history_csv(path.parent), "report.html": _html}
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
    return {"weights": load_file(out / runs.WEIGHTS), "startup": max(finished[first] - first * per_epoch, 0),
            "per_epoch": per_epoch, "tail": total - finished[last], "total": total}


def _refuses_to_resume(out: Path) -> bool:
    """Whether `--resume` on a run folder without a checkpoint exits 2 with one line telling to start again."""
    refused = subprocess.run([sys.executable, "-m", "aekit", "train", "--resume", "--out", str(out)],
                             capture_output=True, text=True, env=ENV)
    lines = refused.stderr.strip().splitlines()
    return refused.returncode == 2 and len(lines) == 1 and "delete the folder" in lines[0]


def _trial(out: Path, kills: int, rng: random.Random, reference: dict, tally: Counter, problems: list[str]) -> int:
    """Train in ``out``, SIGKILLed up to ``kills`` times at random moments and resumed each time, then to the end;
    returns the kills that landed (a run may finish before its moment comes)."""
    resume, landed = False, 0
    while True:
        done = len(runs.load_checkpoint(out / runs.CHECKPOINT)["history"]) if resume else 0
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
        if (out / runs.CHECKPOINT).exists():
            tally["lost epochs"] += max(0, seen - len(runs.load_checkpoint(out / runs.CHECKPOINT)["history"]))
            resume = True
            continue
        tally["lost epochs"] += seen
        tally["killed before the first epoch"] += 1
        if (out / runs.CONFIG).exists() and not _refuses_to_resume(out):
            problems.append(f"{out.parent.name}: --resume without a checkpoint did not refuse in one line")
        shutil.rmtree(out, ignore_errors=True)
        resume = False


def kill_campaign(kills: int, kills_per_trial: int, rng: random.Random, folder: Path) -> dict:
    """Trials until ``kills`` SIGKILLs have landed; each trial's final weights are compared with an uninterrupted
    run's."""
    reference = _timings(folder)
    print(f"  uninterrupted run: {reference['total']:.1f} s (start-up {reference['startup']:.1f} s, "
          f"{reference['per_epoch']:.2f} s per epoch, {reference['tail']:.1f} s after the last epoch)",
          file=sys.stderr)
    tally, problems, trial = Counter(), [], 0
    while tally["kills"] < kills and trial < 3 * kills:
        out = folder / f"trial-{trial}" / "run"
        out.parent.mkdir()
        before = len(problems)
        landed = _trial(out, min(kills_per_trial, kills - tally["kills"]), rng, reference, tally, problems)
        weights = load_file(out / runs.WEIGHTS)
        same = weights.keys() == reference["weights"].keys() and all(
            torch.equal(weights[k], v) for k, v in reference["weights"].items())
        if not same:
            problems.append(f"{out.parent.name}: the final weights differ from the uninterrupted run's")
        tally["kills survived"] += landed if same and len(problems) == before else 0
        tally["trials"] += 1
        print(f"  trial {trial}: {landed} kills, final weights {'identical' if same else 'DIFFERENT'}",
              file=sys.stderr)
        trial += 1
    return {"tally": tally, "problems": problems}


# ---------------------------------------------------------------- report

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="fuzz cases per reader (default: 1000)")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs to land in all (default: 8)")
    parser.add_argument("--kills-per-trial", type=int, default=2, help="kills per training run before it may "
                        "finish (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fuzzing and the kill moments (default: 0)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aekit-faults-") as tmp:
        folder = Path(tmp)
        print("fuzzing", file=sys.stderr)
        rows, failures = fuzz_campaign(args.cases, args.seed, folder)
        print("killing", file=sys.stderr)
        kills = kill_campaign(args.kills, args.kills_per_trial, random.Random(args.seed), folder)
    tally = kills["tally"]

    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({os.cpu_count()} cores), torch "
          f"{torch.__version__}; seed {args.seed}; wall time {(time.perf_counter() - started) / 60:.1f} min\n")
    print("| reader | cases run | malformed inputs rejected | accepted as valid | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['reader']} | {row['cases']} | {row['rejected']} | {row['accepted']} | {row['seconds']:.0f} |")
    total = {k: sum(row[k] for row in rows) for k in ("cases", "rejected", "accepted")}
    print(f"| all | {total['cases']} | {total['rejected']} | {total['accepted']} | |\n")
    print(f"fuzz cases run: {total['cases']} ({args.cases} asked per reader, {len(rows)} readers); "
          f"malformed inputs rejected: {total['rejected']}; failures: {len(failures)}")
    print(f"kills survived: {tally['kills survived']} of {tally['kills']} (SIGKILL at random moments in "
          f"{tally['trials']} training runs; {tally['killed before the first epoch']} before the first epoch ended)")
    print(f"lost epochs: {tally['lost epochs']} (of {tally['epochs finished before a kill']} finished before a kill)")
    print(f"half-written files: {tally['half-written files']}; leftover .*.tmp files: {tally['leftover .tmp files']}")
    for problem in failures + kills["problems"]:
        print(f"FAILED: {problem}")
    ok = not failures and not kills["problems"] and tally["kills survived"] == tally["kills"] \
        and tally["lost epochs"] == 0 and tally["half-written files"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
