"""Data of any size, measured: `aekit pack` against Pillow's bare decode, streamed against device-resident batches,
the memory of a streamed training on a small store and on one larger than this machine's RAM, and of whole streamed
runs (training to its last file, then `aekit evaluate`) on stores of several sizes.

Four parts (``--parts``), each on data generated here and removed afterwards:

- pack: a folder of ``--pngs`` generated PNGs (64x64 RGB: gradients and noise) is packed with ``--workers`` 1 and 2,
  ``--rounds`` times alternated; images per second per worker against Pillow's bare decode of the same files in one
  process (read, open, convert, as an array) measured just before each pack, and each pack's peak resident memory
  (the largest process of its tree).
- speed: an MNIST-sized store (60,000 uint8 images of 28x28: the real MNIST when ``--mnist DIR`` holds it, else
  generated), PyTorch's VAE example (784-400-20, batch 128), one epoch in each mode, ``--rounds`` times alternated;
  images per second, stream over device.
- memory: a uint8 store of ``--small-gib`` and one of ``--big-gib`` (64x64 RGB images; the big one larger than RAM),
  a streamed training (an MLP auto-encoder) stopped by SIGTERM after ``--seconds``; the training process's peak
  anonymous resident memory (RssAnon, polled: the store's pages are the page cache's, for the kernel to reclaim),
  its images per second against the disk's own random-read rate for rows of that size, and whether the machine
  swapped (pswpout in /proc/vmstat).
- whole: a labelled uint8 store of each of ``--whole-gib`` (28x28 grey images, MNIST's size, so that a GiB holds
  many examples; ten random labels, so that the end of a run fits its probes), the same MLP streamed for one epoch by
  `aekit train` to its last file (the test metrics, the figures, the report), then `aekit evaluate` of the run; each
  command's peak RssAnon (polled) and seconds.

    python -m bench.scale [--parts pack,speed,memory,whole] [--pngs 50000] [--big-gib 32] [--small-gib 0.5]
        [--whole-gib 0.5,3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

AEKIT = [sys.executable, "-m", "aekit"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
SIDE = 64  # generated photos: SIDE x SIDE RGB
# The model the memory parts stream: an MLP auto-encoder 256,128 -> 16, batch 128, on the CPU.
STREAMED_MLP = ["--model", "ae", "--hidden", "256,128", "--code-dim", "16", "--batch-size", "128", "--device", "cpu"]


def _photo(seed: int) -> np.ndarray:
    """A 64x64 RGB image: a random colour gradient with noise, so PNG compresses it as it does a photo, not a flat."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)
    base = rng.random(3, dtype=np.float32)[:, None, None] * ramp[None, :, None] + rng.random(3)[:, None, None] * ramp
    noise = rng.normal(0, 0.08, (3, SIDE, SIDE))
    return (np.clip(base / 2 + noise, 0, 1) * 255).astype(np.uint8)


def _write_png(args) -> None:
    folder, i = args
    Image.fromarray(_photo(i).transpose(1, 2, 0)).save(folder / f"{i // 1000:03d}" / f"{i:06d}.png")


def _measured(command: list[str], timeout: float = 3600) -> tuple[float, float, str]:
    """(seconds, peak resident MiB of the largest process in the command's tree, stdout) of a fresh process."""
    probe = (
        "import resource, subprocess, sys, time; start = time.perf_counter(); "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); print(done.stdout); "
        "print('MEASURED', done.returncode, time.perf_counter() - start, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    last = done.stdout.strip().splitlines()[-1].split()
    if last[0] != "MEASURED" or last[1] != "0":
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return float(last[2]), int(last[3]) / 1024, done.stdout


def _bare_decode(files: list[Path]) -> tuple[float, float]:
    """Pillow's bare decode of ``files`` in this process (read, open, convert, as an array): images per second, and
    CPU seconds an image."""
    started, used = time.perf_counter(), time.process_time()
    for file in files:
        with Image.open(io.BytesIO(file.read_bytes())) as image:
            np.asarray(image.convert("RGB"))
    return len(files) / (time.perf_counter() - started), (time.process_time() - used) / len(files)


def _pack_seconds(folder: Path, store: Path, workers: int) -> tuple[float, float, float]:
    """`aekit pack FOLDER` with ``workers``, timed inside a fresh process that has imported aekit already: its
    seconds, the CPU seconds of it and its workers, and the peak resident MiB of the largest of them; the store is
    removed afterwards."""
    timed = (
        "import os, sys, time; from aekit.data.store.writer import pack; cpu = lambda: sum(os.times()[:4]); "
        "start, used = time.perf_counter(), cpu(); "
        "pack(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), progress=False); "
        "print(time.perf_counter() - start, cpu() - used)"
    )
    _, peak, out = _measured([sys.executable, "-c", timed, str(folder), str(store), str(workers)])
    shutil.rmtree(store)
    seconds, cpu = map(float, [line for line in out.splitlines() if line.strip()][-2].split())
    return seconds, cpu, peak


def bench_pack(work: Path, n: int, rounds: int) -> list[str]:
    folder = work / "photos"
    for i in range(0, n, 1000):
        (folder / f"{i // 1000:03d}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_png, [(folder, i) for i in range(n)], chunksize=256)
    files = sorted(folder.rglob("*.png"))
    made = time.perf_counter() - started
    size = sum(f.stat().st_size for f in files)
    sample = files[:: max(1, len(files) // 10_000)]
    # Each pack against the bare decode measured just before it: the machine's other load changes by the minute.
    runs: dict[int, list[tuple]] = {1: [], 2: []}  # (seconds, CPU seconds, peak MiB, bare images/s, bare CPU s)
    for _ in range(rounds):
        for workers, results in runs.items():
            bare = _bare_decode(sample)
            results.append((*_pack_seconds(folder, work / f"photos-{workers}.store", workers), *bare))
    shutil.rmtree(folder)
    lines = [
        f"{n} PNGs of {SIDE}x{SIDE} RGB, {size / 2**20:.0f} MiB ({made:.0f} s to make); {rounds} rounds, each pack "
        f"after Pillow's bare decode of {len(sample)} of them in one process (read, open, convert, to an array); "
        "medians, the range of the ratios in brackets. CPU: the bare decode's CPU time an image over the pack's "
        "(its process and workers): what per worker / bare decode would be were its --workers cores its alone",
        "| workers | seconds | images/s | per worker | bare decode (images/s) | per worker / bare decode | "
        "CPU: bare / pack | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workers, results in runs.items():
        seconds, _, _, bare, _ = np.median(results, axis=0)
        ratios = [n / s / workers / b for s, _, _, b, _ in results]
        cpu = [b * n / c for _, c, _, _, b in results]
        lines.append(
            f"| {workers} | {seconds:.1f} | {n / seconds:.0f} | {n / seconds / workers:.0f} | {bare:.0f} | "
            f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{np.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) | {max(r[2] for r in results):.0f} |"
        )
    return lines


def _uint8_npy(path: Path, n: int, shape: tuple[int, ...], seed: int = 0) -> Path:
    """A uint8 .npy of n examples written a block at a time (memory stays small whatever its size)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *shape))
    rng = np.random.default_rng(seed)
    rows = max(1, (256 << 20) // int(np.prod(shape)))
    for start in range(0, n, rows):
        block = array[start : start + rows]
        block[...] = rng.integers(0, 256, block.shape, dtype=np.uint8)
    array.flush()
    del array
    return path


def _store_of(work: Path, name: str, n: int, shape: tuple[int, ...], labelled: bool = False) -> Path:
    """A packed store of n generated uint8 examples (``labelled``: with ten random labels, packed from an .npz of the
    examples and labels); the file it was packed from is removed (a store whose source is gone opens, as a copy on
    another machine does)."""
    source = _uint8_npy(work / f"{name}.npy", n, shape)
    if labelled:
        array, source = source, work / f"{name}.npz"
        np.savez(source, x=np.load(array, mmap_mode="r"), y=np.random.default_rng(0).integers(0, 10, n))
        array.unlink()
    store = work / f"{name}.store"
    subprocess.run([*AEKIT, "pack", str(source), "--out", str(store)], check=True, env=ENV, capture_output=True)
    source.unlink()
    return store


def _epoch_seconds(run: Path) -> float:
    lines = (run / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return float(lines[-1].split(",")[header.index("seconds")])


def bench_speed(work: Path, rounds: int, mnist: str | None) -> list[str]:
    if mnist and Path(mnist).is_dir():
        store, what = work / "mnist.store", f"MNIST from {mnist}"
        subprocess.run(
            [*AEKIT, "pack", "mnist", "--data-dir", mnist, "--out", str(store)],
            check=True,
            env=ENV,
            capture_output=True,
        )
    else:
        store, what = _store_of(work, "mnist-like", 70_000, (1, 28, 28)), "70,000 generated 28x28 uint8 images"
    n_train = len(__import__("aekit").load_dataset(str(store)).x_train)
    rates: dict[str, list[float]] = {"device": [], "stream": []}
    for _ in range(rounds):
        for mode in rates:
            run = work / f"speed-{mode}"
            subprocess.run(
                [
                    *AEKIT,
                    "train",
                    "--dataset",
                    str(store),
                    "--model",
                    "vae",
                    "--hidden",
                    "400",
                    "--code-dim",
                    "20",
                    "--batch-size",
                    "128",
                    "--epochs",
                    "1",
                    "--data-on",
                    mode,
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--out",
                    str(run),
                ],
                check=True,
                env=ENV,
                capture_output=True,
            )
            rates[mode].append(n_train / _epoch_seconds(run))
            shutil.rmtree(run)
    device, stream = (float(np.median(rates[m])) for m in ("device", "stream"))
    return [
        f"{what} ({n_train} training images), the 784-400-20 VAE, batch 128, one epoch a round, {rounds} rounds "
        "alternated (medians; the epoch's seconds include its test loss)",
        "| mode | images/s (each round) | median |",
        "| --- | --- | --- |",
        f"| device | {', '.join(f'{r:.0f}' for r in rates['device'])} | {device:.0f} |",
        f"| stream | {', '.join(f'{r:.0f}' for r in rates['stream'])} | {stream:.0f} |",
        f"stream / device: {stream / device:.3f} (target >= 0.8)",
    ]


def _rss_anon_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _swapped_pages() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pswpout "):
            return int(line.split()[1])
    return 0


def _streamed_training(store: Path, run: Path, seconds: float) -> dict:
    """Train in stream mode for ``seconds`` (more epochs than fit in them, so that every store is measured while
    training), then SIGTERM (the trainer stops after its step and checkpoints): peak RssAnon (polled every 50 ms),
    images per second of the epoch it stopped in (from the checkpoint's position), exit status."""
    process = subprocess.Popen(
        [
            *AEKIT,
            "train",
            "--dataset",
            str(store),
            *STREAMED_MLP,
            "--epochs",
            "1000",
            "--data-on",
            "stream",
            "--no-progress",
            "--out",
            str(run),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, started = 0.0, time.monotonic()
    while process.poll() is None and time.monotonic() - started < seconds:
        peak = max(peak, _rss_anon_mib(process.pid))
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    while process.poll() is None:
        peak = max(peak, _rss_anon_mib(process.pid))
        time.sleep(0.05)
    err = process.stderr.read()
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    # Stopped inside the epoch (its position), or the epoch ended first (the data were small).
    position = state["position"]
    if position is None:
        n_train = len(__import__("aekit").load_dataset(str(store)).x_train)
        position = {"step": n_train / 128, "seconds": state["history"][-1]["seconds"]}
    return {
        "peak": peak,
        "status": process.returncode,
        "rate": position["step"] * 128 / position["seconds"],
        "steps": position["step"],
        "err": err.strip()[-300:],
    }


def _random_read_rate(path: Path, row_bytes: int, seconds: float = 5.0) -> float:
    """Rows per second that random reads of ``row_bytes`` at row boundaries of the file's data get."""
    size = path.stat().st_size
    rng = np.random.default_rng(1)
    offset = size % row_bytes  # the .npy header, so rows start where the array's do
    rows = (size - offset) // row_bytes
    count, started = 0, time.perf_counter()
    with path.open("rb", buffering=0) as file:
        while time.perf_counter() - started < seconds:
            for row in rng.integers(0, rows, 256):
                os.pread(file.fileno(), row_bytes, offset + int(row) * row_bytes)
            count += 256
    return count / (time.perf_counter() - started)


def bench_memory(work: Path, small_gib: float, big_gib: float, seconds: float) -> list[str]:
    shape = (3, SIDE, SIDE)
    row = int(np.prod(shape))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"uint8 stores of {SIDE}x{SIDE} RGB images; an MLP auto-encoder (256,128 -> 16), batch 128, streamed for "
        f"{seconds:.0f} s then stopped by SIGTERM; this machine has {ram:.1f} GiB of RAM",
        "| store | images | peak RssAnon (MiB) | images/s | disk random reads of one row (rows/s) | "
        "swapped pages | exit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    peaks = []
    for name, gib in (("small", small_gib), ("big", big_gib)):
        n = int(gib * 2**30 / row)
        store = _store_of(work, name, n, shape)
        swapped = _swapped_pages()
        result = _streamed_training(store, work / f"run-{name}", seconds)
        swapped = _swapped_pages() - swapped
        disk = _random_read_rate(store / "examples.npy", row)
        peaks.append(result["peak"])
        lines.append(
            f"| {gib:g} GiB | {n} | {result['peak']:.0f} | {result['rate']:.0f} | {disk:.0f} | {swapped} | "
            f"{result['status']} |"
        )
        shutil.rmtree(store)
        shutil.rmtree(work / f"run-{name}")
    lines.append(
        f"growth of the peak from the small store to the big one: {peaks[1] / peaks[0] - 1:+.1%} (target under 10%)"
    )
    return lines


def _whole_command(command: list[str]) -> tuple[float, float]:
    """(peak RssAnon MiB, polled every 50 ms, and seconds) of ``command`` run to its end."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, started = 0.0, time.monotonic()
    while process.poll() is None:
        peak = max(peak, _rss_anon_mib(process.pid))
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read()[-2000:]}")
    return peak, time.monotonic() - started


def bench_whole(work: Path, sizes: list[float]) -> list[str]:
    shape = (1, 28, 28)  # small rows: many examples (and batches) a GiB
    row = int(np.prod(shape))
    lines = [
        "labelled uint8 stores of 28x28 grey images (ten random labels); an MLP auto-encoder (256,128 -> 16), batch "
        "128, streamed for one epoch by `aekit train` to its last file (test metrics with the probes, figures, "
        "report), then `aekit evaluate` of the run; each command's peak anonymous resident memory (RssAnon)",
        "| store | images | train: peak RssAnon (MiB) | train: seconds | evaluate: peak RssAnon (MiB) | "
        "evaluate: seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    peaks = []
    for gib in sizes:
        n = int(gib * 2**30 / row)
        store, run = _store_of(work, f"whole-{gib:g}", n, shape, labelled=True), work / f"whole-run-{gib:g}"
        train = _whole_command(
            [*AEKIT, "train", "--dataset", str(store), *STREAMED_MLP, "--epochs", "1", "--data-on", "stream"]
            + ["--no-progress", "--out", str(run)]
        )
        evaluate = _whole_command([*AEKIT, "evaluate", str(run)])
        peaks.append((train[0], evaluate[0]))
        lines.append(f"| {gib:g} GiB | {n} | {train[0]:.0f} | {train[1]:.0f} | {evaluate[0]:.0f} | {evaluate[1]:.0f} |")
        shutil.rmtree(store)
        shutil.rmtree(run)
    lines.append(
        f"growth of the peak from the smallest store to the largest: train {peaks[-1][0] / peaks[0][0] - 1:+.1%}, "
        f"evaluate {peaks[-1][1] / peaks[0][1] - 1:+.1%} (target under 10%)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="pack,speed,memory,whole")
    parser.add_argument("--pngs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mnist", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    parser.add_argument("--small-gib", type=float, default=0.5)
    parser.add_argument("--big-gib", type=float, default=32.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--whole-gib", default="0.5,3", help="comma-separated store sizes of the whole part")
    parser.add_argument("--work", default=None, help="where to generate the data (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aekit-scale-", dir=args.work))
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cpus": os.cpu_count()}
    try:
        for part in args.parts.split(","):
            lines = {
                "pack": lambda: bench_pack(work, args.pngs, args.rounds),
                "speed": lambda: bench_speed(work, args.rounds, args.mnist),
                "memory": lambda: bench_memory(work, args.small_gib, args.big_gib, args.seconds),
                "whole": lambda: bench_whole(work, [float(gib) for gib in args.whole_gib.split(",")]),
            }[part]()
            report[part] = lines
            print("\n".join([f"## {part}", *lines, ""]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
