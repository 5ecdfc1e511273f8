"""The run folder at its edges: one writer at a time, every refused write a one-line user error (exit 2), and what a
failure leaves either resumed with --resume or started again by the same command, to the same weights bit for bit."""

import fcntl
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aekit.cli import main
from aekit.errors import RunError
from aekit.training import run_folder

ARGS = ["--model", "ae", "--hidden", "16", "--code-dim", "2", "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(capsys, *argv):
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(status, err, match=""):
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("aekit: error: ") and match in err, err


def refused(capsys, *argv, match=""):
    status, _, err = cli(capsys, *argv)
    one_line_error(status, err, match)
    return err


def same_weights(folder, reference):
    weights = load_file(folder / run_folder.WEIGHTS)
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run of 2 epochs never interrupted: its folder and weights."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--out", str(out), "--epochs", "2", *ARGS]) == 0
    return out, load_file(out / run_folder.WEIGHTS)


# ---------------------------------------------------------------- one writer per folder


def _contender(folder, index, rounds, start, tried, results, holders, most, seconds):
    """Takes the lock on ``folder`` at the same moment as the others, ``rounds`` times; then for ``seconds`` takes it
    whenever it can, counting the holders at once, and sometimes removes the folder while holding it (as a run that
    failed before its first epoch does)."""
    for r in range(rounds):
        start.wait()
        try:
            lock = run_folder.RunLock(folder).__enter__()
            results[r * 4 + index] = 1
        except RunError as error:
            lock = None
            results[r * 4 + index] = 2 if str(folder) in str(error) and "\n" not in str(error) else 3
        tried.wait()
        if lock is not None:
            if r % 2:
                shutil.rmtree(folder)
            lock.__exit__(None, None, None)
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            lock = run_folder.RunLock(folder).__enter__()
        except RunError:
            continue
        with holders.get_lock():
            holders.value += 1
            most.value = max(most.value, holders.value)
        time.sleep(0.0005)
        with holders.get_lock():
            holders.value -= 1
        if index == 0:  # removal ends its hold (the others may already be making the folder again)
            shutil.rmtree(folder, ignore_errors=True)
        lock.__exit__(None, None, None)


def test_a_refusal_names_the_holder_that_has_just_taken_the_lock(tmp_path):
    # The holder writes its "host pid" just after it takes the lock; a process refused in between waits for it.
    (tmp_path / run_folder.LOCK).touch()
    held = os.open(tmp_path / run_folder.LOCK, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    claim = threading.Timer(0.1, os.pwrite, (held, b"elsewhere 4242\n", 0))
    claim.start()
    try:
        with pytest.raises(RunError, match=f"{tmp_path} is in use by process elsewhere 4242;"):
            run_folder.RunLock(tmp_path).__enter__()
    finally:
        claim.join()
        os.close(held)


@pytest.mark.slow
def test_of_processes_locking_one_folder_at_once_exactly_one_proceeds(tmp_path):
    context = multiprocessing.get_context("fork")  # the children only lock files, so torch's threads do not matter
    rounds, folder = 50, tmp_path / "run"
    start, tried = context.Barrier(4, timeout=30), context.Barrier(4, timeout=30)  # a contender that fails breaks them
    results, holders, most = context.Array("i", rounds * 4), context.Value("i", 0), context.Value("i", 0)
    contenders = [
        context.Process(target=_contender, args=(folder, i, rounds, start, tried, results, holders, most, 1.5))
        for i in range(4)
    ]
    for process in contenders:
        process.start()
    for process in contenders:
        process.join(timeout=120)
        assert process.exitcode == 0
    for r in range(rounds):
        assert sorted(results[r * 4 : r * 4 + 4]) == [1, 2, 2, 2], (r, results[r * 4 : r * 4 + 4])
    assert most.value == 1


LAUNCH = """import os, sys, time
from aekit.jobs import workflow
from aekit.cli import main
while not os.path.exists(sys.argv[1]):
    time.sleep(0.002)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_of_trainings_started_at_once_into_one_folder_one_trains_and_the_others_are_refused(tmp_path):
    rounds = [(tmp_path / f"go{r}", tmp_path / f"run{r}") for r in range(2)]
    launched = {
        go: [
            subprocess.Popen(
                [sys.executable, "-c", LAUNCH, str(go), "train", "--out", str(out), "--epochs", "2", *ARGS],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            for _ in range(3)
        ]
        for go, out in rounds
    }
    for go, out in rounds:
        go.touch()
        finished = [(process.wait(timeout=300), process.communicate()[1]) for process in launched[go]]
        assert sorted(status for status, _ in finished) == [0, 2, 2], finished
        for status, err in finished:
            if status == 2:
                one_line_error(status, err, f"{out} is in use by process")
        run_folder.load(out)


HOLD = """import sys, time
from aekit.training.run_folder import RunLock
RunLock(sys.argv[1]).__enter__()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_held_run_is_refused_to_every_writer_and_a_killed_holders_lock_is_free(capsys, tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (
            ["train", "--resume", "--out", run, "--no-progress"],
            ["evaluate", run],
            ["export-projector", run],
        ):
            assert f" {holder.pid};" in refused(capsys, *argv, match=f"{run} is in use by process")
        holder.kill()
        # Dead but not reaped: its pid still exists (a zombie), yet the kernel has released its lock.
        os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)
        status, out, err = cli(capsys, "evaluate", run)
        assert status == 0 and json.loads(out)["sse_per_example"] > 0, err
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- file-system errors


def test_an_output_the_file_system_refuses_is_one_line_for_every_command(capsys, tmp_path, reference):
    run = reference[0]
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    examples = tmp_path / "examples.npy"
    np.save(examples, np.zeros((3, 1, 8, 8), np.float32))
    small = ["--models", "ae", "--epochs", "1", "--hidden", "16", "--no-progress", "--device", "cpu"]
    for out in (blocker, blocker / "below"):
        refused(capsys, "train", "--out", out, "--epochs", "2", *ARGS, match=f"cannot write {out}")
        refused(capsys, "export-projector", run, "--out", out, match=f"cannot write {out}")
        refused(capsys, "compare", "--out", out, *small, match=f"cannot write {out}")
        refused(capsys, "demo", "--out", out, "--epochs", "1", "--no-progress", match=f"cannot write {out}")
        refused(capsys, "denoise", run, examples, "--out", out / "x.npy", match=str(out))
        refused(capsys, "compress", run, examples, "--bits", "4", "--out", out / "x.aek", match=str(out))
    refused(
        capsys, "compare", "--out", tmp_path / "comparison", "--runs", blocker, *small, match=f"cannot write {blocker}"
    )
    assert not (tmp_path / "comparison").exists()
    for taken in (tmp_path / "taken.npy", tmp_path / "taken.aekc"):  # a folder where the output file must go
        taken.mkdir()
        job = ["denoise", run, examples] if taken.suffix == ".npy" else ["compress", run, examples, "--bits", "4"]
        refused(capsys, *job, "--out", taken, match=f"{taken} already exists; add --overwrite")
        refused(capsys, *job, "--out", taken, "--overwrite", match=f"{taken} is a folder and the output is a file")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "report.html").unlink()
    (broken / "report.html").mkdir()
    refused(capsys, "evaluate", broken, match=f"cannot write {broken / 'report.html'}")


def _limited(limit, *argv):
    """`aekit ARGV` in a process that may write files of at most ``limit`` bytes (Python ignores SIGXFSZ, so a write
    past it fails with EFBIG)."""
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    return subprocess.Popen(
        [sys.executable, "-m", "aekit", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard)),
    )


# What each limit cuts short in this model's run: the first checkpoint (~50 KB), a figure, the report (~240 KB).
LIMITS = (4 << 10, 56 << 10, 128 << 10)


@pytest.mark.slow
def test_a_file_size_limit_at_any_point_leaves_a_folder_that_recovers_to_the_same_weights(capsys, tmp_path, reference):
    base = tmp_path / "one-epoch"
    assert cli(capsys, "train", "--out", base, "--epochs", "1", *ARGS)[0] == 0
    jobs = []
    for limit in LIMITS:
        first = tmp_path / f"first-{limit}"
        first.mkdir()  # made by the user: a failure leaves it (and maybe config.json) in place
        jobs.append((first, _limited(limit, "train", "--out", first, "--epochs", "2", *ARGS)))
        resumed = tmp_path / f"resumed-{limit}"
        shutil.copytree(base, resumed)
        jobs.append((resumed, _limited(limit, "train", "--resume", "--out", resumed, "--epochs", "2", "--no-progress")))
    for out, process in jobs:
        status = process.wait(timeout=300)
        one_line_error(status, process.communicate()[1], "File too large")
        assert not list(out.glob(".*.tmp"))
        if run_folder.holds_run(out):
            status, _, err = cli(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--no-progress")
        else:  # failed before its first checkpoint: the same command starts it again
            status, _, err = cli(capsys, "train", "--out", out, "--epochs", "2", *ARGS)
        assert status == 0, (out, err)
        assert (out / run_folder.METRICS).is_file() and (out / "report.html").is_file()
        same_weights(out, reference[1])


@pytest.mark.slow
def test_evaluate_on_a_read_only_run_prints_the_metrics_without_writing(tmp_path, reference):
    shelf = tmp_path / "shelf"
    shutil.copytree(reference[0], shelf / "run")
    before = (shelf / "run" / run_folder.METRICS).read_bytes()
    logs = tmp_path / "logs"
    logs.mkdir()
    # A read-only bind mount in a mount namespace of its own (root ignores permission bits, not a read-only mount).
    script = (
        f"mount --bind {shelf} {shelf} && mount -o remount,bind,ro {shelf} || exit 99; "
        f"{sys.executable} -m aekit evaluate {shelf}/run >{logs}/evaluate.out 2>{logs}/evaluate.err; "
        f"echo $? >{logs}/evaluate.rc; "
        f"{sys.executable} -m aekit train --out {shelf}/new --epochs 1 {' '.join(ARGS)} 2>{logs}/train.err; "
        f"echo $? >{logs}/train.rc"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, env=ENV, timeout=300
    )
    if result.returncode == 99 or not (logs / "evaluate.rc").exists():
        pytest.skip(f"cannot make a read-only bind mount here ({result.stderr.strip()})")
    err = (logs / "evaluate.err").read_text()
    assert (logs / "evaluate.rc").read_text().strip() == "0", err
    assert len(err.strip().splitlines()) == 1 and "read-only" in err, err
    assert json.loads((logs / "evaluate.out").read_text())["sse_per_example"] > 0
    assert (shelf / "run" / run_folder.METRICS).read_bytes() == before
    one_line_error(int((logs / "train.rc").read_text()), (logs / "train.err").read_text(), "Read-only file system")


# ---------------------------------------------------------------- resume, Ctrl-C and stops


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("model", "code_dim", "x", "config.json: model.code_dim is 'x' (a string); it must be a whole number;"),
        ("model", "code_dim", 3, "do not match its options"),
        ("options", "lr", "fast", "lr 'fast' (not a number)"),
        ("options", "epochs", "3", "epochs '3' (not a whole number)"),
    ],
)
def test_resuming_a_run_whose_config_was_damaged_is_refused(capsys, tmp_path, reference, section, key, value, match):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    config = json.loads((run / run_folder.CONFIG).read_text())
    config[section][key] = value
    (run / run_folder.CONFIG).write_text(json.dumps(config))
    refused(capsys, "train", "--resume", "--out", run, "--no-progress", match=match)


def test_ctrl_c_before_the_first_epoch_says_to_start_again_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    from aekit.jobs import workflow

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(workflow, "train", interrupted)
        status, _, err = cli(capsys, "train", "--out", out, "--epochs", "2", *ARGS)
    assert status == 130 and "--resume" not in err and "run the same command again" in err, err
    assert not out.exists()
    assert cli(capsys, "train", "--out", out, "--epochs", "2", *ARGS)[0] == 0


def test_a_signal_in_the_last_epoch_stops_and_resume_finishes_the_run(capsys, tmp_path, monkeypatch, reference):
    from aekit.training import trainer

    calls = []

    def test_loss_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the test loss of epoch 2 of 2
            signal.raise_signal(signal.SIGTERM)
        return original(*args, **kwargs)

    original = trainer.mean_loss
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "mean_loss", test_loss_then_sigterm)
        status, _, err = cli(capsys, "train", "--out", out, "--epochs", "2", *ARGS)
    assert status == 128 + signal.SIGTERM and "stopped by SIGTERM after epoch 2 of 2" in err and "--resume" in err
    assert not (out / run_folder.METRICS).exists()
    status, _, err = cli(capsys, "train", "--resume", "--out", out, "--no-progress")
    assert status == 0, err
    assert (out / run_folder.METRICS).is_file() and (out / "report.html").is_file() and (out / "figures").is_dir()
    same_weights(out, reference[1])


def test_a_resume_that_raises_the_epochs_says_so_in_config_json(capsys, tmp_path, reference):
    out = tmp_path / "run"
    assert cli(capsys, "train", "--out", out, "--epochs", "1", *ARGS)[0] == 0
    before = run_folder.read_config(out)
    assert cli(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--no-progress")[0] == 0
    after = run_folder.read_config(out)
    assert after["options"] == {**before["options"], "epochs": 2} and after["model"] == before["model"]
    same_weights(out, reference[1])
    assert cli(capsys, "train", "--resume", "--out", out, "--no-progress")[0] == 0  # nothing left: it stays as it was
    assert run_folder.read_config(out) == after


# ---------------------------------------------------------------- the run's data


def test_a_run_refuses_to_resume_evaluate_or_export_on_other_data(capsys, tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(photos / f"{i:02d}.png")
    run = tmp_path / "run"
    assert cli(capsys, "train", "--dataset", photos, "--out", run, "--epochs", "1", *ARGS)[0] == 0
    data = json.loads((run / run_folder.CONFIG).read_text())["data"]
    assert data["n_train"] == 16 and data["n_test"] == 4 and data["shape"] == [1, 6, 5] and data["store_id"] is None
    Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(photos / "20.png")  # one photo added
    counts = "has 21 examples (17 training, 4 test) where the run was trained on 20 (16 training, 4 test)"
    for argv in (
        ("train", "--resume", "--out", run, "--epochs", "2", "--no-progress"),
        ("evaluate", run),
        ("export-projector", run, "--out", tmp_path / "projector"),
    ):
        refused(capsys, *argv, match=f"the data in {photos} {counts}")
    assert len(json.loads((run / run_folder.CONFIG).read_text())["options"]) and not (tmp_path / "projector").exists()
    (photos / "20.png").unlink()
    assert cli(capsys, "evaluate", run)[0] == 0
    Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(photos / "07.png")  # one photo replaced
    refused(capsys, "evaluate", run, match="holds other examples, labels or split than the run was trained on")
