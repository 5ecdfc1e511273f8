"""Stores (`aekit pack`, aekit.data.store): the same data as the source, memory-mapped; deterministic, atomic,
checked on open, and packed in bounded memory."""

import contextlib
import errno
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR, needs_mnist
from helpers import snapshot
from PIL import Image

from aekit.cli import main
from aekit.data import load_dataset
from aekit.data import store as fmt
from aekit.data.dataset import as_float32, split_indices
from aekit.data.files import idx_bytes
from aekit.data.images import image_listing
from aekit.data.store import decoding, open_store, writer
from aekit.errors import DataError

# What a store folder holds, sorted.
STORE_FILES = ["examples.npy", "labels.npy", "listing.json", "manifest.json", "split.npz", "statistics.npz"]
OLD_STORE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "store_v1"
)  # packed by aekit before version 2 (from a .npz, since gone)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = ["--epochs", "1", "--no-progress", "--hidden", "16", "--code-dim", "2"]


def run_cli(capsys, *argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def pack(capsys, source, out, *extra):
    """`aekit pack`'s summary and stderr; in this process (--workers 1) unless ``extra`` names --workers (worker
    processes: the test is marked slow)."""
    workers = () if "--workers" in extra else ("--workers", "1")
    status, out_, err = run_cli(capsys, "pack", source, "--out", out, "--no-progress", *workers, *extra)
    assert status == 0, err
    return json.loads(out_), err


def assert_refused(capsys, folder, *argv, match):
    """One line on stderr containing ``match``, exit 2, and ``folder`` (and its parent's listing) unchanged."""
    before, listing = snapshot(folder), sorted(p.name for p in folder.parent.iterdir())
    status, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (status, err)
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == listing
    return lines[0]


def make_images(folder, n_per_class=12, size=(13, 9), classes=("cats", "dogs"), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(pixels if channels == 3 else pixels[..., 0]).save(folder / name / f"{i:05d}.png")
    return folder


def assert_same_data(store, source, seed=0, test_fraction=0.2):
    """The store holds load_dataset's split of the source, each split in increasing source order (load_dataset's in
    the seeded permutation's), uint8 rows the source's intensities times 255."""
    n = len(source.x_train) + len(source.x_test)
    train, test = split_indices(n, seed=seed, test_fraction=test_fraction)
    for x, y, reference, labels, split in (
        (store.x_train, store.y_train, source.x_train, source.y_train, train),
        (store.x_test, store.y_test, source.x_test, source.y_test, test),
    ):
        assert isinstance(x, np.memmap)
        order = np.argsort(split)
        reference = as_float32(reference[order])  # a uint8 .npy loads as its 8-bit intensities, memory-mapped
        np.testing.assert_array_equal(as_float32(x), reference)
        if x.dtype == np.uint8:
            np.testing.assert_array_equal(x, np.rint(reference * 255).astype(np.uint8))
        if labels is None:
            assert y is None
        else:
            np.testing.assert_array_equal(y, labels[order])
    assert store.binary == source.binary and store.shape == source.shape and store.checked
    assert store.value_range == pytest.approx(source.value_range, abs=1e-6)


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "pets")


def test_an_image_folder_packs_to_uint8_rows_of_the_same_split_and_trains(capsys, tmp_path, images):
    store = tmp_path / "pets.store"
    summary, _ = pack(capsys, images, store)
    manifest = json.loads((store / "manifest.json").read_text())
    assert summary["id"] == manifest["id"] and manifest["dtype"] == "uint8" and manifest["shape"] == [3, 9, 13]
    assert manifest["label_names"] == ["cats", "dogs"] and manifest["n_train"] == 19 and manifest["n_test"] == 5
    assert manifest["source"]["path"] == str(images) and manifest["scale"] == "intensity: uint8 / 255"
    assert sorted(p.name for p in store.iterdir()) == STORE_FILES
    data = load_dataset(str(store))
    assert data.x_train.dtype == np.uint8 and data.name == "pets"
    assert_same_data(data, load_dataset(str(images)))
    split = np.load(store / "split.npz")
    train, test = split_indices(24, seed=0, test_fraction=0.2)
    np.testing.assert_array_equal(split["train"], np.sort(train))
    np.testing.assert_array_equal(split["test"], np.sort(test))
    statistics = np.load(store / "statistics.npz")
    rows = data.x_train.astype(np.float64) / 255
    np.testing.assert_allclose(statistics["mean"], rows.mean(0), atol=1e-12)
    np.testing.assert_allclose(statistics["std"], rows.std(0), atol=1e-12)
    assert statistics["max"].max() == manifest["bounds"][1]

    run = tmp_path / "run"
    status, out, err = run_cli(capsys, "train", "--dataset", store, "--out", run, "--net", "conv", *FAST)
    assert status == 0, err
    trained = json.loads(out)
    status, out, err = run_cli(capsys, "evaluate", run)
    assert status == 0, err
    assert json.loads(out)["sse_per_example"] == pytest.approx(trained["sse_per_example"], rel=1e-5)


def test_a_uint8_npy_a_csv_with_a_header_and_digits_pack_to_the_same_data(capsys, tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "pixels.npy", rng.integers(0, 256, (40, 7, 5), dtype=np.uint8))
    table = rng.normal(size=(30, 4)) * [1, 10, 100, 1000]
    (tmp_path / "table.csv").write_text("a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in table))
    for source, dtype in (
        (tmp_path / "pixels.npy", "uint8"),
        (tmp_path / "table.csv", "float32"),
        ("digits", "float32"),
    ):
        store = tmp_path / f"{getattr(source, 'stem', source)}.store"
        summary, _ = pack(capsys, source, store, "--seed", "3", "--test-fraction", "0.25")
        assert summary["dtype"] == dtype
        assert_same_data(
            load_dataset(str(store)), load_dataset(str(source), seed=3, test_fraction=0.25), seed=3, test_fraction=0.25
        )
    manifest = json.loads((tmp_path / "digits.store" / "manifest.json").read_text())
    assert manifest["label_names"] == [str(d) for d in range(10)] and manifest["seed"] == 3
    assert json.loads((tmp_path / "table.store" / "manifest.json").read_text())["scale"] == "real values"

    run = tmp_path / "run"
    status, out, err = run_cli(capsys, "train", "--dataset", tmp_path / "table.store", "--out", run, *FAST)
    assert status == 0, err
    status, out, err = run_cli(capsys, "evaluate", run)
    assert status == 0 and "r2" in json.loads(out), err


def test_an_npz_split_and_idx_files_pack_too(capsys, tmp_path):
    rng = np.random.default_rng(2)
    x_train, x_test = rng.random((20, 6), dtype=np.float32), rng.random((7, 6), dtype=np.float32)
    y_train, y_test = rng.integers(0, 3, 20), rng.integers(0, 3, 7)
    np.savez(tmp_path / "given.npz", x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)
    pack(capsys, tmp_path / "given.npz", tmp_path / "given")
    data = load_dataset(str(tmp_path / "given"))
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    manifest = json.loads((tmp_path / "given" / "manifest.json").read_text())
    assert manifest["split"] == "given" and manifest["seed"] is None and not manifest["binary"]

    pixels = rng.integers(0, 256, (30, 6, 4), dtype=np.uint8)
    (tmp_path / "x-ubyte").write_bytes(idx_bytes(pixels))
    (tmp_path / "x.idx.gz").write_bytes(idx_bytes(pixels, gzipped=True))
    train, test = split_indices(30, seed=0, test_fraction=0.2)
    for name in ("x-ubyte", "x.idx.gz"):
        pack(capsys, tmp_path / name, tmp_path / f"{name}.store")
        data = load_dataset(str(tmp_path / f"{name}.store"))
        assert data.x_train.dtype == np.uint8 and data.shape == (1, 6, 4)
        np.testing.assert_array_equal(data.x_train[:, 0], pixels[np.sort(train)])
        np.testing.assert_array_equal(data.x_test[:, 0], pixels[np.sort(test)])


@needs_mnist
def test_mnist_packs_to_its_8_bit_pixels_in_its_own_split(capsys, tmp_path):
    pack(capsys, "mnist", tmp_path / "mnist", "--data-dir", MNIST_DIR)
    store, source = load_dataset(str(tmp_path / "mnist")), load_dataset("mnist", data_dir=MNIST_DIR)
    for x, reference in ((store.x_train, source.x_train), (store.x_test, source.x_test)):
        assert x.dtype == np.uint8 and isinstance(x, np.memmap)
        np.testing.assert_array_equal(as_float32(x), reference)
    np.testing.assert_array_equal(store.y_test, source.y_test)
    manifest = json.loads((tmp_path / "mnist" / "manifest.json").read_text())
    assert manifest["split"] == "given" and manifest["n_train"] == 60000
    assert manifest["source"]["sha256"]["t10k-images-idx3-ubyte"].startswith("0fa7898d")


@pytest.mark.slow
def test_packing_twice_gives_byte_identical_stores(capsys, tmp_path, images):
    pack(capsys, images, tmp_path / "one", "--workers", "1")
    pack(capsys, images, tmp_path / "two", "--workers", "2")
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")
    # A folder packed twice over (its first image gray, a later one in colour) gives one store too.
    make_images(images, n_per_class=1, classes=("cats",), mode="L")  # cats/00000.png, gray, comes first
    pack(capsys, images, tmp_path / "three", "--workers", "1")
    pack(capsys, images, tmp_path / "four", "--workers", "2")
    assert snapshot(tmp_path / "three") == snapshot(tmp_path / "four") != snapshot(tmp_path / "one")
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.slow
def test_a_killed_pack_leaves_no_store_and_packing_again_succeeds(capsys, tmp_path):
    source = make_images(tmp_path / "many", n_per_class=2000, size=(8, 8), classes=("a",), mode="L")
    store = tmp_path / "many.store"
    process = subprocess.Popen(
        [sys.executable, "-m", "aekit", "pack", str(source), "--out", str(store), "--workers", "1", "--no-progress"],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".many.store.partial")]:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not store.exists()
    partial = [p for p in tmp_path.iterdir() if ".partial" in p.name]
    assert len(partial) == 1 and not (partial[0] / "manifest.json").exists()
    with pytest.raises(Exception, match="no images"):  # a partial folder is never taken for a store or for data
        load_dataset(str(partial[0]))
    pack(capsys, source, store, "--workers", "1")
    assert len(load_dataset(str(store)).x_train) == 1600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the stale partial was removed


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except OSError:  # ended meanwhile
            pass
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc; the parent-death signal")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
@pytest.mark.slow
def test_a_signalled_pack_leaves_no_worker_and_sigterm_nothing_at_all(tmp_path, how):
    # SIGTERM (timeout, schedulers, docker stop) is taken as Ctrl-C: the workers stop, the partial folder with its
    # scratch file goes, exit 143. A SIGKILLed pack's workers die with it (they once waited for ever, holding the
    # scratch file); what it leaves the next pack removes (test_a_killed_pack_leaves_no_store_...).
    source = tmp_path / "many"
    source.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(source / "0.png")
    for i in range(1, 2000):  # links to one image: a pack of seconds, at no cost to make
        os.link(source / "0.png", source / f"{i}.png")
    command = [sys.executable, "-m", "aekit", "pack", str(source), "--out", str(tmp_path / "s"), "--workers", "2"]
    process = subprocess.Popen(
        [*command, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := children(process.pid)) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.005)
        time.sleep(0.2)  # chunks in flight
        assert process.poll() is None, "the pack ended before it was signalled"
        process.send_signal(getattr(signal, how))
        status = process.wait(timeout=60)
        deadline = time.monotonic() + 5
        while any(running(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived the pack"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left, should the test fail
    left = sorted(p.name for p in tmp_path.iterdir())
    if how == "SIGTERM":
        assert status == 128 + signal.SIGTERM and process.stderr.read() == "aekit: interrupted by SIGTERM\n"
        assert left == ["many"]
    else:
        assert status == -signal.SIGKILL and len(left) == 2 and left[0].startswith(".s.partial-")


DAMAGES = ("truncated", "byte changed", "shape edited", "split edited", "manifest of another store", "labels replaced")


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_store_is_refused_in_one_line(capsys, tmp_path, images, damage):
    store = tmp_path / "store"
    pack(capsys, images, store)
    manifest_path = store / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    examples = store / "examples.npy"
    if damage == "truncated":
        data = examples.read_bytes()
        examples.write_bytes(data[:-100])
        match = "truncated"
    elif damage == "byte changed":
        sampled = manifest["files"]["examples.npy"]["sampled"]
        offset = sampled["offsets"][-1] + 7
        with examples.open("r+b") as file:
            file.seek(offset)
            byte = file.read(1)
            file.seek(offset)
            file.write(bytes([byte[0] ^ 1]))
        match = "sampled sha256"
    elif damage == "shape edited":
        manifest["shape"] = [3, 13, 9]
        manifest_path.write_text(json.dumps(manifest))
        match = "manifest says uint8 (24, 3, 13, 9)"
    elif damage == "split edited":
        manifest["n_train"], manifest["n_test"] = 20, 4
        manifest_path.write_text(json.dumps(manifest))
        match = "the manifest was edited"
    elif damage == "manifest of another store":
        other = make_images(tmp_path / "other", seed=5)
        pack(capsys, other, tmp_path / "other.store")
        shutil.copy(tmp_path / "other.store" / "manifest.json", manifest_path)
        match = "sha256"
    else:
        np.save(store / "labels.npy", 1 - np.load(store / "labels.npy"))
        match = "labels.npy does not match its sha256"
    out = tmp_path / "run"
    line = assert_refused(capsys, out, "train", "--dataset", store, "--out", out, *FAST, match=match)
    assert f"store {store}" in line and "pack it again with `aekit pack" in line
    with pytest.raises(DataError, match=re.escape(match)):
        open_store(store)


def test_a_run_refuses_its_store_packed_again_with_other_data_and_follows_a_moved_one(capsys, tmp_path, images):
    store, run = tmp_path / "store", tmp_path / "run"
    summary, _ = pack(capsys, images, store)
    status, _, err = run_cli(capsys, "train", "--dataset", store, "--out", run, *FAST)
    assert status == 0, err
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((store / "manifest.json").read_text())
    assert config["data"]["store_id"] == summary["id"] and config["data"]["sha256"] == fmt.data_digest(manifest)
    # A photo added and the store packed again, as its refusal says: the run is not resumed on other data.
    shutil.copy(images / "cats" / "00000.png", images / "cats" / "extra.png")
    shutil.rmtree(store)
    repacked, _ = pack(capsys, images, store)
    line = assert_refused(capsys, run, "train", "--resume", "--out", run, "--epochs", "2", "--no-progress", match="")
    assert f"the data in {store} has 25 examples (20 training, 5 test) where the run was trained on 24" in line
    assert_refused(capsys, run, "evaluate", run, match=f"the data in {store} has 25 examples")
    (images / "cats" / "extra.png").unlink()
    shutil.rmtree(store)
    pack(capsys, images, store)  # the same source packed again: the same store, byte for byte
    assert run_cli(capsys, "evaluate", run)[0] == 0
    os.utime(images / "cats" / "00001.png", ns=(5, 5))  # touched, then packed again: another store of the same data
    shutil.rmtree(store)
    assert pack(capsys, images, store)[0]["id"] != summary["id"]
    assert run_cli(capsys, "evaluate", run)[0] == 0

    # Moved: the refusal names where it was and how to point the run at the new place, which is then recorded.
    store.rename(tmp_path / "moved")
    line = assert_refused(capsys, run, "evaluate", run, match=f"{store}, the data the run in {run} was trained on")
    assert f"store {summary['id']}" in line and f"`aekit evaluate {run} --dataset NEWPATH`" in line
    other = tmp_path / "other"
    pack(capsys, make_images(tmp_path / "others", seed=9), other)
    assert_refused(capsys, run, "evaluate", run, "--dataset", other, match="is the store ")
    status, _, err = run_cli(capsys, "evaluate", run, "--dataset", tmp_path / "moved")
    assert status == 0 and f"now reads its data from {tmp_path / 'moved'}" in err, err
    assert json.loads((run / "config.json").read_text())["options"]["dataset"] == str(tmp_path / "moved")
    assert run_cli(capsys, "evaluate", run)[0] == 0
    (tmp_path / "moved").rename(store)
    argv = ("train", "--resume", "--out", run, "--epochs", "2", "--no-progress", "--dataset", store)
    status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert json.loads((run / "config.json").read_text())["options"]["dataset"] == str(store)


def test_a_test_fraction_given_with_a_store_is_refused(capsys, tmp_path, images):
    store, run = tmp_path / "store", tmp_path / "run"
    pack(capsys, images, store)
    line = assert_refused(
        capsys, run, "train", "--dataset", store, "--out", run, "--test-fraction", "0.3", *FAST, match=""
    )
    assert "a store keeps the split it was packed with" in line and "--test-fraction" in line


def test_full_verification_reads_every_byte(capsys, tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((300, 64, 64), np.uint8))  # 1.2 MB, more than the 64 sampled blocks
    store = tmp_path / "store"
    pack(capsys, tmp_path / "big.npy", store)
    manifest = json.loads((store / "manifest.json").read_text())
    offsets = manifest["files"]["examples.npy"]["sampled"]["offsets"]
    assert len(offsets) == 19  # every 64 KiB block of a store this small
    np.save(tmp_path / "huge.npy", np.zeros((1100, 64, 64), np.uint8))  # 4.5 MB: 64 blocks spread evenly
    pack(capsys, tmp_path / "huge.npy", tmp_path / "huge")
    offsets = json.loads((tmp_path / "huge" / "manifest.json").read_text())["files"]["examples.npy"]["sampled"]
    gap = offsets["offsets"][1] + 65536 + 10  # a byte no sampled block covers
    with (tmp_path / "huge" / "examples.npy").open("r+b") as file:
        file.seek(gap)
        file.write(b"\x01")
    load_dataset(str(tmp_path / "huge"))  # the cheap check cannot see it...
    assert run_cli(capsys, "pack", "--verify", store)[0] == 0
    status, _, err = run_cli(capsys, "pack", "--verify", tmp_path / "huge")  # ...the full one does
    assert status == 2 and "examples.npy has sha256" in err and len(err.strip().splitlines()) == 1


def test_a_store_whose_source_changed_is_refused_and_a_copy_without_its_source_opens(capsys, tmp_path, images):
    store = tmp_path / "store"
    pack(capsys, images, store)
    shutil.copy(images / "cats" / "00000.png", images / "cats" / "extra.png")
    out = tmp_path / "run"
    assert_refused(
        capsys,
        out,
        "train",
        "--dataset",
        store,
        "--out",
        out,
        *FAST,
        match=f"its source {images} changed since it was packed",
    )
    (images / "cats" / "extra.png").unlink()
    assert len(load_dataset(str(store)).x_train) == 19  # the same listing again
    images.rename(tmp_path / "moved")
    assert len(load_dataset(str(store)).x_train) == 19


def test_a_source_touched_or_copied_back_unchanged_opens_and_one_changed_in_place_is_refused(capsys, tmp_path, images):
    store = tmp_path / "store"
    pack(capsys, images, store)
    os.utime(images / "cats" / "00004.png", ns=(1, 1))  # `touch`: its time alone changes
    assert len(load_dataset(str(store)).x_train) == 19
    shutil.copytree(images, tmp_path / "backup", copy_function=shutil.copyfile)  # `cp -r`: every time changes
    shutil.rmtree(images)
    (tmp_path / "backup").rename(images)
    assert len(load_dataset(str(store)).x_train) == 19
    with (images / "dogs" / "00002.png").open("r+b") as file:  # changed in place: the same size, a new time
        file.seek(60)
        byte = file.read(1)
        file.seek(60)
        file.write(bytes([byte[0] ^ 1]))
    with pytest.raises(
        DataError, match=f"its source {images} changed since it was packed \\(dogs/00002.png modified\\)"
    ):
        load_dataset(str(store))
    # One file: a touched .npy opens; one edited in place (same size) is refused.
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(10, 4))
    pack(capsys, tmp_path / "x.npy", tmp_path / "x.store")
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    assert len(load_dataset(str(tmp_path / "x.store")).x_test) == 2
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(10, 4)[::-1])
    with pytest.raises(DataError, match="x.npy modified"):
        load_dataset(str(tmp_path / "x.store"))


def test_each_image_is_read_once_its_crc_taken_of_the_bytes_decoded(capsys, tmp_path, images, monkeypatch):
    """listing.json's CRC-32 of an image comes from the bytes its worker decoded: no image is read again for it, and
    the CRCs are those of the files."""
    hashed = []
    monkeypatch.setattr("aekit.data.store.format.content_crc32", lambda path: hashed.append(path))
    store = tmp_path / "store"
    pack(capsys, images, store)
    assert hashed == []
    listing = json.loads((store / "listing.json").read_text())
    assert len(listing) == 24 and all(
        crc == f"{zlib.crc32((images / name).read_bytes()):08x}" for name, _, _, crc in listing
    )


def test_a_listing_changed_in_place_is_refused_where_it_is_read(capsys, tmp_path, images):
    store = tmp_path / "store"
    pack(capsys, images, store)
    listing = store / "listing.json"
    listing.write_bytes(listing.read_bytes().replace(b'"cats/00000.png"', b'"cats/00000.PNG"'))  # the same size
    assert len(load_dataset(str(store)).x_train) == 19  # opening reads it only where the source's listing changed
    status, _, err = run_cli(capsys, "pack", "--verify", store)
    assert status == 2 and "listing.json does not match its sha256" in err, err
    os.utime(images / "cats" / "00003.png", ns=(1, 1))
    with pytest.raises(DataError, match="listing.json does not match its sha256"):
        load_dataset(str(store))


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    """digits packed: float32 intensities, a seeded split, labels and label names."""
    from aekit.data.store.writer import pack as pack_store

    store = tmp_path_factory.mktemp("digits") / "store"
    pack_store("digits", store, workers=1, progress=False)
    return store


EDITS = {
    "name": ("name", "digits-2"),
    "binary": ("binary", False, "scale", fmt.SCALES["real"]),
    "label_names": ("label_names", [str(9 - d) for d in range(10)]),
    "seed": ("seed", 1),
    "test_fraction": ("test_fraction", 0.25),
    "split": ("split", "given", "seed", None, "test_fraction", None),
    "skipped": ("skipped", ["7.png"]),
    "source": ("source", {"kind": "npy", "path": "/elsewhere/x.npy", "listing_sha256": None, "sha256": None}),
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_manifest_edited_in_any_field_is_refused(tmp_path, digits_store, edit):
    store = tmp_path / "store"
    shutil.copytree(digits_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    changes = EDITS[edit]
    for key, value in zip(changes[::2], changes[1::2]):
        assert manifest[key] != value
        manifest[key] = value
    (store / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))
    with pytest.raises(DataError, match=f"store {store}: manifest.json has id .*\\(the manifest was edited\\)"):
        load_dataset(str(store))


def test_a_store_packed_before_version_2_still_opens(tmp_path):
    manifest = json.loads((OLD_STORE / "manifest.json").read_text())
    assert manifest["version"] == 1 and "listing.json" not in manifest["files"]
    data = load_dataset(str(OLD_STORE))
    assert data.name == "table.npz" and len(data.x_train) == 8 and len(data.y_test) == 2 and not data.binary
    store = tmp_path / "store"
    shutil.copytree(OLD_STORE, store)
    np.save(store / "labels.npy", 1 - np.load(store / "labels.npy"))  # its files are checked as before
    with pytest.raises(DataError, match="labels.npy does not match its sha256"):
        load_dataset(str(store))


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_broken_images_are_refused_or_skipped_and_listed(capsys, tmp_path, images, workers):
    (images / "cats" / "garbage.png").write_bytes(b"not a png at all")
    whole = (images / "dogs" / "00003.png").read_bytes()
    (images / "dogs" / "truncated.png").write_bytes(whole[: len(whole) // 2])  # its header reads, its pixels do not
    store = tmp_path / "store"
    argv = ("pack", images, "--out", store, "--no-progress", "--workers", workers)
    assert_refused(capsys, store, *argv, match="garbage.png")
    summary, err = pack(capsys, images, store, "--skip-bad", "--workers", workers)
    assert summary["skipped"] == ["cats/garbage.png", "dogs/truncated.png"] and summary["n"] == 24
    assert "skipped cats/garbage.png" in err and "skipped dogs/truncated.png" in err
    (images / "cats" / "garbage.png").unlink()
    (images / "dogs" / "truncated.png").unlink()
    good = tmp_path / "good"
    pack(capsys, images, good)
    assert snapshot(good)["examples.npy"] == snapshot(store)["examples.npy"]


def forged_png(width: int, height: int) -> bytes:
    """A 2x2 PNG whose header claims ``width`` x ``height`` RGB pixels (its checksum fixed: only the size lies)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    data = buffer.getvalue()
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def test_headers_that_lie_size_nothing_before_an_image_decodes(capsys, tmp_path):
    # PNGs of 70 bytes whose headers claim 3000 x 3000 pixels (27 MB each), and 12000 x 12000 (over Pillow's limit,
    # which it only warns of): nothing is sized from their headers before one has decoded (none does), so a pack
    # with --skip-bad refuses the folder having written nothing, under a file-size limit of 1 MiB.
    folder = tmp_path / "forged"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(forged_png(3000, 3000))
        (folder / f"{i + 3}.png").write_bytes(forged_png(12000, 12000))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's warning of an image over its limit would fail the test
            line = assert_refused(
                capsys, folder, "pack", folder, "--out", tmp_path / "s", "--skip-bad", "--workers", "1", match=""
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert line == f"aekit: error: {folder}: no image in it can be read; replace them"


@pytest.mark.slow
def test_worker_processes_pass_on_nothing_of_pillows_to_stderr(tmp_path):
    # Two PNGs over Pillow's limit among good images, met by worker processes: skipped in a line each, and nothing
    # else on stderr (Pillow warned of them from the workers, and each one's pixels were allocated before failing).
    folder = make_images(tmp_path / "photos", n_per_class=6, size=(6, 5), classes=("a",))
    for name in ("a/00002x.png", "a/00004x.png"):
        (folder / name).write_bytes(forged_png(12000, 12000))
    command = [sys.executable, "-m", "aekit", "pack", str(folder), "--out", str(tmp_path / "s"), "--workers", "2"]
    result = subprocess.run([*command, "--skip-bad", "--no-progress"], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    limit = f"more pixels than Pillow's limit of {Image.MAX_IMAGE_PIXELS}, PIL.Image.MAX_IMAGE_PIXELS"
    assert result.stderr.splitlines() == [
        f"aekit: skipped a/00002x.png ({limit})",
        f"aekit: skipped a/00004x.png ({limit})",
        f"store written to {tmp_path / 's'}",
    ]


def test_no_row_of_an_image_that_fails_to_decode_is_written(capsys, tmp_path, images, monkeypatch):
    # Its header reads, its pixels do not: the split is drawn again without it, and its row (zeros) never reaches
    # the store, nor does any row after it in that try.
    whole = (images / "dogs" / "00003.png").read_bytes()
    (images / "dogs" / "00003.png").write_bytes(whole[: len(whole) // 2])
    written = []
    write_examples = writer._write_examples

    def spied(folder, plan, progress):
        rows = plan.rows

        def recorded(indices):
            for chunk in rows(indices):
                written.append(np.array(chunk))
                yield chunk

        plan.rows = recorded
        return write_examples(folder, plan, progress)

    monkeypatch.setattr(writer, "_write_examples", spied)
    summary, _ = pack(capsys, images, tmp_path / "store", "--skip-bad")
    assert summary["skipped"] == ["dogs/00003.png"] and summary["n"] == 23
    assert written and all(row.any() for chunk in written for row in chunk)  # noise images: no row is all zeros


def test_odd_images_pack_as_training_reads_them_and_pillow_says_nothing(capsys, tmp_path):
    # A palette with transparency, gray with alpha, CMYK, 16-bit gray, a phone's photo stored sideways with its EXIF
    # orientation (upright it is 4 wide and 3 high, as the others), a truncated JPEG (skipped).
    folder = tmp_path / "odd"
    folder.mkdir()
    palette = Image.new("P", (4, 3))
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    palette.save(folder / "a.png", transparency=bytes([128, 255]))
    Image.new("LA", (4, 3), (51, 7)).save(folder / "b.png")
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(folder / "c.jpg")
    Image.fromarray(np.full((3, 4), 13107, dtype=np.uint16)).save(folder / "d.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 3, 3), dtype=np.uint8)).save(
        folder / "e.jpg", exif=exif
    )
    whole = (folder / "e.jpg").read_bytes()
    (folder / "f.jpg").write_bytes(whole[: len(whole) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning of Pillow's would reach the user: it fails the test
        summary, err = pack(capsys, folder, tmp_path / "odd.store", "--skip-bad")
        assert summary["shape"] == [3, 3, 4] and summary["dtype"] == "float32" and summary["skipped"] == ["f.jpg"]
        skip, written = err.splitlines()
        assert skip.startswith("aekit: skipped f.jpg (") and written.startswith("store written to"), err
        store = load_dataset(str(tmp_path / "odd.store"))
        (folder / "f.jpg").unlink()  # training on the folder refuses it
        assert_same_data(store, load_dataset(str(folder)))


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_a_folder_unlike_its_first_image_is_packed_again_as_read(capsys, tmp_path, monkeypatch, workers):
    # The first image's header is taken for every image's: gray 8-bit here, then colour and 16-bit images, seen a
    # few chunks in (several in flight), make the pack start again reading every header.
    monkeypatch.setattr(decoding, "IMAGES_PER_CHUNK", 4)
    folder = make_images(tmp_path / "mixed", n_per_class=20, size=(6, 5), classes=("a",), mode="L")
    make_images(folder, n_per_class=3, size=(6, 5), classes=("b",), seed=1)
    Image.fromarray(np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000).save(folder / "b" / "deep.png")
    store = tmp_path / "mixed.store"
    summary, _ = pack(capsys, folder, store, "--workers", workers)
    assert summary["dtype"] == "float32" and summary["shape"] == [3, 5, 6] and summary["n"] == 24
    assert_same_data(load_dataset(str(store)), load_dataset(str(folder)))
    assert sorted(p.name for p in store.iterdir()) == STORE_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed", "mixed.store"]


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_a_size_mismatch_found_late_packs_each_image_at_its_own_size(capsys, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(decoding, "IMAGES_PER_CHUNK", 4)
    folder = make_images(tmp_path / "photos", n_per_class=40, size=(6, 5), classes=("a",))
    for late in ("00030.png", "00035.png"):
        Image.new("RGB", (7, 5), (9, 8, 7)).save(folder / "a" / late)
    store = tmp_path / "photos.store"
    summary, _ = pack(capsys, folder, store, "--workers", workers)
    assert summary["shape"] == [3] and summary["n"] == 40  # ragged (version 3): tests/data/test_ragged_store.py
    photos = load_dataset(str(store), patch=5).photos
    assert sorted(photo.shape for photo in photos)[-2:] == [(3, 5, 7), (3, 5, 7)]
    assert all((photo == [[[9]], [[8]], [[7]]]).all() for photo in photos if photo.shape == (3, 5, 7))


@pytest.mark.slow
def test_a_pca_on_a_float32_store_says_only_where_its_run_went(capsys, tmp_path):
    # Its fit once handed the store's read-only map to torch.from_numpy, and PyTorch warned on stderr.
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32))
    store, run = tmp_path / "x.store", tmp_path / "run"
    pack(capsys, tmp_path / "x.npy", store)
    command = ["train", "--dataset", store, "--model", "pca", "--code-dim", "2", "--out", run, "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "aekit", *map(str, command)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == 0 and result.stderr.splitlines() == [f"run written to {run}"], result.stderr


def test_uint8_statistics_are_exact(capsys, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (50, 12), dtype=np.uint8)
    x[:, 0] = 77  # never varies
    x[:, 1] = 255 * (np.arange(50) % 2)
    np.save(tmp_path / "x.npy", x)
    pack(capsys, tmp_path / "x.npy", tmp_path / "store")
    statistics = np.load(tmp_path / "store" / "statistics.npz")
    rows = x[np.sort(split_indices(50, seed=0, test_fraction=0.2)[0])].astype(np.float64) / 255
    assert statistics["std"][0] == 0 and statistics["mean"][0] == 77 / 255
    np.testing.assert_allclose(statistics["mean"], rows.mean(0), rtol=1e-14)
    np.testing.assert_allclose(statistics["std"], rows.std(0), rtol=1e-12, atol=1e-15)  # numpy: 1.7e-16 for 0
    np.testing.assert_array_equal(statistics["min"], rows.min(0))
    np.testing.assert_array_equal(statistics["max"], rows.max(0))


def test_an_image_folder_lists_what_its_stores_were_listed_with(tmp_path):
    # The listing digest of stores already packed (pathlib's rglob and is_file then) must not change.
    folder = tmp_path / "odd"
    for name in ("b.png", "a/c.PNG", "a-b.jpg", ".hidden/d.jpeg", ".png", "..png", "e.", "f.txt", "g.png/h.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    (folder / "folder.png").mkdir()
    (folder / "linked").symlink_to(folder / "a")  # a linked folder is not followed
    (folder / "link.png").symlink_to(folder / "b.png")  # a link to an image is one
    (folder / "broken.png").symlink_to(folder / "gone.png")
    listing = image_listing(folder)
    names = ["..png", ".hidden/d.jpeg", "a/c.PNG", "a-b.jpg", "b.png", "g.png/h.png", "link.png"]
    assert [name for name, _, _ in listing] == names
    stats = [os.stat(folder / name) for name in names]
    assert listing == [(name, s.st_size, s.st_mtime_ns) for name, s in zip(names, stats)]


def test_a_photo_folder_holding_a_manifest_of_its_own_trains_and_packs(capsys, tmp_path, images):
    # A web export or a downloaded data set: its manifest.json is not a store's, so the folder is a folder of images.
    (images / "manifest.json").write_text(json.dumps({"name": "pets", "version": 1, "files": ["cats/00000.png"]}))
    assert len(load_dataset(str(images)).x_train) == 19
    summary, _ = pack(capsys, images, tmp_path / "store")
    assert summary["n"] == 24
    # A store's manifest damaged past reading is still a store's (it sits beside examples.npy): refused as one.
    (tmp_path / "store" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json is not valid JSON .*; delete it and pack it again"):
        load_dataset(str(tmp_path / "store"))


def test_a_subfolder_that_cannot_be_read_is_refused_or_skipped_and_listed(capsys, tmp_path, images, monkeypatch):
    # os.scandir refuses the folder as it does for a user without the right to read it (tests may run as root, whom
    # chmod does not stop).
    make_images(images, n_per_class=2, classes=("birds",), seed=3)
    locked, scandir = images / "birds", os.scandir

    def refusing(path="."):
        if isinstance(path, str) and os.path.normpath(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    store, run = tmp_path / "store", tmp_path / "run"
    match = f"{locked} cannot be read (Permission denied); make it readable or move it out of {images}"
    assert_refused(capsys, store, "pack", images, "--out", store, "--no-progress", "--workers", "1", match=match)
    assert_refused(capsys, run, "train", "--dataset", images, "--out", run, *FAST, match=match)
    summary, err = pack(capsys, images, store, "--skip-bad")
    assert summary["skipped"] == ["birds/"] and summary["n"] == 24 and "skipped birds/ (Permission denied)" in err
    assert json.loads((store / "manifest.json").read_text())["label_names"] == ["cats", "dogs"]
    assert len(load_dataset(str(store)).x_train) == 19  # the listing leaves the folder out as the pack did


def test_bad_pack_commands_are_refused(capsys, tmp_path, images):
    store = tmp_path / "store"
    pack(capsys, images, store)
    assert_refused(capsys, store, "pack", images, "--out", store, match="already exists")
    other = tmp_path / "other"
    assert_refused(capsys, other, "pack", store, "--out", other, match="already a store")
    assert_refused(capsys, other, "pack", "nope", "--out", other, match="unknown source 'nope'")
    assert_refused(capsys, other, "pack", images, match="needs --out")
    assert_refused(capsys, other, "pack", images, "--out", other, "--workers", "0", match="--workers 0")


# The pack's own high-water mark (VmHWM belongs to the address space made at exec; ru_maxrss would also count the
# forked test process's pages before the exec).
_PEAK = """
import sys
from aekit.data.store.writer import pack
pack(sys.argv[1], sys.argv[2], workers=1, progress=False)
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from /proc (Linux)")
@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_data(tmp_path):
    peaks = {}
    for megabytes in (16, 128):
        source = tmp_path / f"{megabytes}.npy"
        rows = megabytes * 2**20 // 784
        block = (np.arange(4096 * 784) % 251).astype(np.uint8)
        with source.open("wb") as file:  # written in blocks, so this process never holds the data
            np.lib.format.write_array_header_1_0(
                file, {"descr": "|u1", "fortran_order": False, "shape": (rows, 28, 28)}
            )
            for start in range(0, rows, 4096):
                file.write(block[: min(4096, rows - start) * 784].tobytes())
        result = subprocess.run(
            [sys.executable, "-c", _PEAK, str(source), str(tmp_path / f"{megabytes}.store")],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        peaks[megabytes] = int(result.stdout.split()[-1]) * 1024
        source.unlink()
    print(
        f"peak RSS of the pack: 16 MiB source {peaks[16] / 2**20:.0f} MiB, 128 MiB source {peaks[128] / 2**20:.0f} MiB"
    )
    assert peaks[128] - peaks[16] < 16 * 2**20, peaks  # 112 MiB more data, under 16 MiB more memory
