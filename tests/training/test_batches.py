"""Batch sources (aekit.training.batches): data on the device or streamed from a memory map give the same training, bit
for bit, resume across modes, shard the same way under torchrun, and streaming keeps memory flat whatever the data size.

Run as a script (``python tests/training/test_batches.py DATA.npy ...``, also under torchrun) it trains on a
memory-mapped .npy the way the tests below need it: see :func:`_launch`.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TORCHRUN_2

from aekit.data import Dataset
from aekit.data.store.writer import pack
from aekit.errors import TrainingStopped
from aekit.models import build_model, model_config
from aekit.training import batches, run_folder
from aekit.training.trainer import TrainSettings, train

HERE = Path(__file__).resolve()
# Run as a script, this file imports conftest as pytest does: from tests/, put first on the path.
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])),
}


def _mapped(tmp_path, digits, name="digits.npy") -> Dataset:
    """digits as 8-bit intensities in one memory-mapped .npy (train rows, then test rows), as a store keeps them."""
    path = tmp_path / name
    x = np.concatenate([digits.x_train, digits.x_test])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=x.shape)
    out[:] = np.rint(x * 255)
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    n = len(digits.x_train)
    return Dataset("mapped digits", mapped[:n], mapped[n:], None, None, binary=True)


def _model(name, dataset):
    torch.manual_seed(0)
    return build_model(model_config(name, dataset.shape, code_dim=8, hidden=(64, 32)))


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("data", ["uint8 memmap", "float32"])
@pytest.mark.parametrize("name", ["ae", "vae"])
def test_stream_and_device_train_to_the_same_weights_bit_for_bit(name, data, digits, tmp_path):
    dataset = _mapped(tmp_path, digits) if data == "uint8 memmap" else digits
    weights, histories = {}, {}
    for mode in ("device", "stream"):
        model = _model(name, dataset)
        histories[mode] = train(
            model, dataset, TrainSettings(epochs=3, batch_size=64, seed=2, data_on=mode), device="cpu", progress=False
        )
        weights[mode] = model.state_dict()
    _same_weights(weights["stream"], weights["device"])
    strip = [{k: v for k, v in record.items() if k != "seconds"} for record in histories["stream"]]
    assert strip == [{k: v for k, v in record.items() if k != "seconds"} for record in histories["device"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, side-stream path needs a CUDA GPU; none here")
@pytest.mark.parametrize(
    "how",
    [{}, {"cuda_graph": True}, {"compile": True, "cuda_graph": True}],
    ids=["eager", "cuda-graph", "compile+cuda-graph"],
)
def test_on_cuda_streamed_batches_train_like_batches_on_the_device(how, digits, tmp_path):
    # The same kernels on the same batches: equal up to the GPU's own non-determinism. Under --cuda-graph the
    # streamed batch is copied into the graph's static input (the gathering then is not in the graph).
    dataset = _mapped(tmp_path, digits)
    results = {}
    for mode in ("device", "stream"):
        model = _model("ae", dataset)
        history = train(
            model, dataset, TrainSettings(epochs=5, batch_size=100, data_on=mode, **how), device="cuda", progress=False
        )
        results[mode] = (history[-1]["test_loss"], {k: v.cpu() for k, v in model.state_dict().items()})
        assert history[-1]["test_loss"] < 0.9 * history[0]["test_loss"]  # it learns
    assert results["stream"][0] == pytest.approx(results["device"][0], rel=1e-4)
    for key, value in results["device"][1].items():
        torch.testing.assert_close(results["stream"][1][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("resume_on", ["stream", "device"])
def test_a_streamed_run_stopped_mid_epoch_resumes_exactly_in_either_mode(resume_on, digits, tmp_path):
    from test_faults import _SignalAt

    dataset = _mapped(tmp_path, digits)
    settings = TrainSettings(epochs=2, batch_size=64, seed=1, data_on="stream")
    straight = _model("vae", dataset)  # the VAE draws noise: the RNG state must resume too
    train(straight, dataset, settings, device="cpu", progress=False)
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(TrainingStopped, match="SIGTERM after step 10 of epoch 2"):
        train(
            _SignalAt(_model("vae", dataset), poison_at=23 + 10),
            dataset,
            settings,
            out=out,
            device="cpu",
            progress=False,
        )
    assert not [t for t in threading.enumerate() if t.name == "aekit-batches"]  # the reader was stopped
    assert run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["position"]["step"] == 10
    torch.manual_seed(99)
    resumed = build_model(model_config("vae", dataset.shape, code_dim=8, hidden=(64, 32)))
    history = train(
        _SignalAt(resumed, poison_at=-1),
        dataset,
        TrainSettings(**{**settings.to_dict(), "data_on": resume_on}),
        out=out,
        device="cpu",
        progress=False,
        resume=True,
    )
    assert len(history) == 2
    _same_weights(resumed.state_dict(), straight.state_dict())


def test_auto_puts_small_data_on_the_device_and_streams_what_does_not_fit(digits, monkeypatch, capsys):
    lines = []
    source = batches.make_source(digits, "auto", torch.device("cpu"), 64, 0, 1, True, lines.append)
    assert source.kind == "device" and source.x_train is not None
    assert re.fullmatch(
        r"data on cpu: both splits \(460 KB as float32\) fit in half of its .* free "
        r"\(--data-on auto\)",
        lines[-1],
    )
    monkeypatch.setattr(batches, "free_memory", lambda device: 800_000)  # half: under 460 KB, over the 368 KB
    source = batches.make_source(digits, "auto", torch.device("cpu"), 64, 0, 1, True, lines.append)
    assert source.kind == "stream" and source.x_train is None
    assert lines[-1] == (
        "data streamed to cpu a batch at a time: both splits (460 KB as float32) exceed half of "
        "its 800 KB free (--data-on auto)"
    )
    # Without the per-epoch test loss only the training split counts; and the trainer says its choice on stderr.
    assert batches.make_source(digits, "auto", torch.device("cpu"), 64, 0, 1, False).kind == "device"
    train(_model("ae", digits), digits, TrainSettings(epochs=1, batch_size=256), device="cpu", progress=True)
    assert "data streamed to cpu a batch at a time" in capsys.readouterr().err
    train(_model("ae", digits), digits, TrainSettings(epochs=1, batch_size=256), device="cpu", progress=False)
    assert capsys.readouterr().err == ""


def test_the_cli_takes_data_on_and_a_resume_may_change_it(tmp_path, monkeypatch):
    import aekit.training.trainer
    from aekit.cli import main

    made = []

    def recording(*args, **kwargs):
        source = batches.make_source(*args, **kwargs)
        made.append(source.kind)
        return source

    monkeypatch.setattr(aekit.training.trainer, "make_source", recording)
    out = tmp_path / "run"
    common = ["--model", "ae", "--hidden", "16", "--code-dim", "2", "--no-progress", "--device", "cpu"]
    assert main(["train", "--out", str(out), "--epochs", "1", "--data-on", "stream", *common]) == 0
    assert run_folder.read_config(out)["options"]["data_on"] == "stream"
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--data-on", "device", "--no-progress"]) == 0
    assert made == ["stream", "device"]
    assert len(run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["history"]) == 2


def test_a_read_error_in_the_reader_reaches_the_loop(digits):
    class Failing(np.ndarray):
        def __getitem__(self, key):
            if isinstance(key, np.ndarray):
                raise OSError("the disk went away")
            return super().__getitem__(key)

    dataset = Dataset("failing", digits.x_train.view(Failing), digits.x_test, None, None, binary=True)
    with pytest.raises(OSError, match="the disk went away"):
        train(_model("ae", dataset), dataset, TrainSettings(epochs=1, data_on="stream"), device="cpu", progress=False)
    assert not [t for t in threading.enumerate() if t.name == "aekit-batches"]


@pytest.mark.slow
def test_two_ranks_streaming_one_memory_map_match_one_process_and_read_only_their_share(digits, tmp_path):
    dataset = _mapped(tmp_path, digits)
    n, batch, epochs = len(dataset.x_train), 64, 2
    common = [str(tmp_path / "digits.npy"), "--n-train", str(n), "--batch-size", str(batch), "--epochs", str(epochs)]
    single = subprocess.run(
        [sys.executable, str(HERE), *common, "--data-on", "device", "--out", str(tmp_path / "one.pt")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(
        [
            *TORCHRUN_2,
            str(HERE),
            *common,
            "--data-on",
            "stream",
            "--out",
            str(tmp_path / "two.pt"),
            "--record",
            str(tmp_path / "read"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{name}.pt", weights_only=True) for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4)  # the ragged last batch splits 15/14
    # Each rank read exactly its slice of every batch of each epoch's order, nothing else.
    generator = torch.Generator().manual_seed(0)
    orders = [torch.randperm(n, generator=generator) for _ in range(epochs)]
    for rank in (0, 1):
        expected = np.concatenate(
            [order[s * batch : (s + 1) * batch][rank::2].numpy() for order in orders for s in range(-(-n // batch))]
        )
        np.testing.assert_array_equal(np.load(tmp_path / f"read.{rank}.npy"), expected)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_data(tmp_path):
    row = 784
    peaks = {}
    for mib in (64, 256):
        path = tmp_path / f"{mib}.npy"
        rows = mib * 2**20 // row
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, row))
        pattern = (np.arange(8192 * row, dtype=np.int64) % 251).astype(np.uint8).reshape(8192, row)
        for start in range(0, rows, 8192):
            x[start : start + 8192] = pattern[: min(8192, rows - start)]
        x.flush()
        del x
        for mode in ("stream", "device") if mib == 64 else ("stream",):
            result = subprocess.run(
                [
                    sys.executable,
                    str(HERE),
                    str(path),
                    "--n-train",
                    str(rows - 1024),
                    "--batch-size",
                    "1024",
                    "--epochs",
                    "1",
                    "--hidden",
                    "16",
                    "--data-on",
                    mode,
                    "--memory",
                ],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=300,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            peaks[mib, mode] = json.loads(result.stdout.splitlines()[-1])["peak_anon_mib"]
    print(f"peak anonymous memory (MiB): {peaks}")
    assert peaks[256, "stream"] < peaks[64, "stream"] + 48, peaks
    assert peaks[64, "device"] > peaks[64, "stream"] + 32, peaks  # the measure does see a copy of the data


def _labelled_store(folder: Path, mib: int) -> Path:
    """A store of ``mib`` MiB of uint8 rows of 784 values in ten classes, each class a pattern of its own plus noise
    (something for the probes to find)."""
    rng = np.random.default_rng(0)
    n = mib * 2**20 // 784
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 192, (10, 784), dtype=np.uint8)[y] + rng.integers(0, 64, (n, 784), dtype=np.uint8)
    source, store = folder / f"{mib}.npz", folder / f"{mib}.store"
    np.savez(source, x=x, y=y)
    del x
    pack(str(source), store, workers=1, progress=False)
    source.unlink()
    return store


def _peak_anon_mib(command: list[str]) -> float:
    """The peak anonymous resident memory (RssAnon, polled every 10 ms) of ``command`` run to its end."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    peak = 0.0
    while process.poll() is None:
        with contextlib.suppress(OSError, RuntimeError):  # the process may end between the poll and the read
            peak = max(peak, _rss_anon_mib(process.pid))
        time.sleep(0.01)
    assert process.returncode == 0, process.stderr.read()[-3000:]
    return peak


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
@pytest.mark.slow
def test_a_streamed_run_to_its_last_file_and_its_evaluation_do_not_grow_with_the_data(tmp_path):
    """The whole of `aekit train --data-on stream` (training, then the test metrics, the figures, the report) and
    `aekit evaluate` of the run, on a store and on one four times its size: a VAE on binarized data of five of ten
    classes, so that every metric and figure that reads the data is made (the probes on labelled data, the anomaly
    scores and their ROC curves, on the seeded binarization)."""
    peaks = {}
    for mib in (32, 128):
        store, run = _labelled_store(tmp_path, mib), tmp_path / f"run-{mib}"
        aekit = [sys.executable, "-m", "aekit"]
        peaks["train", mib] = _peak_anon_mib(
            [
                *aekit,
                "train",
                "--dataset",
                str(store),
                "--model",
                "vae",
                "--binarize",
                "--normal-class",
                "0,1,2,3,4",
                "--hidden",
                "16",
                "--code-dim",
                "8",
                "--epochs",
                "1",
                "--batch-size",
                "1024",
                "--data-on",
                "stream",
                "--device",
                "cpu",
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        assert (run / run_folder.METRICS).is_file() and (run / "report.html").is_file()
        peaks["evaluate", mib] = _peak_anon_mib([*aekit, "evaluate", str(run)])
    print(f"peak anonymous memory (MiB): {peaks}")
    for command in ("train", "evaluate"):
        assert peaks[command, 128] < peaks[command, 32] + 48, peaks


def _rss_anon_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no RssAnon in /proc/{pid}/status")


def _launch(argv: list[str]) -> None:
    """Train an MLP on the uint8 rows of a memory-mapped .npy (the first --n-train rows train, the rest test), as one
    process or a torchrun rank; rank 0 saves the weights to --out. --record PREFIX: each rank saves the training rows
    its batch reader read, in order, to PREFIX.RANK.npy. --memory: print the peak anonymous resident memory."""
    import argparse

    from aekit.training import distributed

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--n-train", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--data-on", default="stream")
    parser.add_argument("--out")
    parser.add_argument("--record")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    peak, done = [_rss_anon_mib()], threading.Event()
    if args.memory:

        def sample():
            while not done.wait(0.005):
                peak[0] = max(peak[0], _rss_anon_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    device = torch.device("cpu")
    if distributed.launched_by_torchrun():
        distributed.init_from_env(device)
    x = np.load(args.data, mmap_mode="r")
    dataset = Dataset("mapped", x[: args.n_train], x[args.n_train :], None, None, binary=True)
    read = []
    if args.record:

        class Recording(batches._Reader):
            def __init__(self, x, steps, *rest):
                super().__init__(x, (read.append(indices) or indices for indices in steps), *rest)

        batches._Reader = Recording
    torch.manual_seed(0)
    model = build_model(model_config("ae", dataset.shape, code_dim=4, hidden=(args.hidden,)))
    train(
        model,
        dataset,
        TrainSettings(epochs=args.epochs, batch_size=args.batch_size, data_on=args.data_on),
        device=device,
        progress=False,
    )
    if args.out and distributed.is_main():
        torch.save(model.state_dict(), args.out)
    if args.record:
        np.save(f"{args.record}.{distributed.rank()}.npy", np.concatenate(read))
    if args.memory:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _rss_anon_mib())
        print(json.dumps({"peak_anon_mib": round(peak[0], 1)}))
    distributed.shutdown()


if __name__ == "__main__":
    _launch(sys.argv[1:])
