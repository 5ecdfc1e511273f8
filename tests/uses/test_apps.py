"""Uses of the codes: compression (the file format and its round trip), denoising and super-resolution."""

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import set_field, with_crc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aekit import codec
from aekit.cli import main
from aekit.data.files import idx_bytes, read_examples, write_examples
from aekit.data.layout import to_shape
from aekit.errors import AekitError, DataError
from aekit.evaluation import evaluate
from aekit.evaluation.measures import psnr
from aekit.jobs.workflow import train_run
from aekit.models import build_model, corrupt, model_config
from aekit.models.resample import downsample, upsample
from aekit.training import run_folder
from aekit.training.trainer import TrainSettings, train
from aekit.uses import file_jobs
from aekit.uses.compress import compress, decompress
from aekit.uses.enhance import denoise, denoise_files, upscale

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _trained(digits, epochs=15, seed=0, *, model, **fields):
    torch.manual_seed(seed)
    model = build_model(model_config(model, digits.shape, hidden=(64, 32), **fields))
    train(model, digits, TrainSettings(epochs=epochs, batch_size=64, seed=seed), device="cpu", progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def ae(digits):
    return _trained(digits, model="ae", code_dim=8)


def _expected_decoding(model, x, bits):
    """The specification of aekit.codec, written out independently: per-dimension min/max, uniform levels."""
    z = model.encode(x).astype(np.float32)
    low, high = z.min(0), z.max(0)
    span = high.astype(np.float64) - low
    levels = 2**bits - 1
    q = np.round(np.divide(z - low.astype(np.float64), span, out=np.zeros(z.shape), where=span > 0) * levels)
    restored = (low + q * (span / levels)).astype(np.float32)
    return model.decode(restored), q


@pytest.fixture(scope="module")
def models(digits, ae):
    pca = build_model(model_config("pca", digits.shape, code_dim=8)).fit(digits.x_train)
    return {"ae": ae, "vae": _trained(digits, epochs=2, model="vae", code_dim=8), "pca": pca}


@pytest.mark.parametrize("model_name", ["ae", "vae", "pca"])
@pytest.mark.parametrize("bits", [1, 5, 8, 16])
def test_decompress_equals_the_decoding_of_the_quantized_code_exactly(digits, models, model_name, bits):
    model = models[model_name]
    x = digits.x_test
    data = compress(model, x, bits)
    expected, q = _expected_decoding(model, x, bits)
    assert len(data) == 32 + 8 * 8 + -(-len(x) * 8 * bits // 8) + 4
    assert np.array_equal(codec.decode(data, "f")[0].q, q)
    assert np.array_equal(decompress(model, data), expected)


def test_more_bits_give_smaller_errors_down_to_the_plain_reconstruction(digits, ae):
    x = digits.x_test
    errors = [((decompress(ae, compress(ae, x, b)) - x) ** 2).sum() for b in (1, 2, 4, 8, 16)]
    # Past 8 bits the quantization error is far below the model's own and may even cancel a little of it.
    assert errors[:4] == sorted(errors[:4], reverse=True)
    plain = ((ae.reconstruct(x) - x) ** 2).sum()
    assert errors[-1] == pytest.approx(plain, rel=1e-4)


@pytest.fixture(scope="module")
def compressed(digits, ae):
    return compress(ae, digits.x_test[:50], 6)


@pytest.mark.parametrize("cut", [0, 3, 20, 35, 60, 100, -1])
def test_a_truncated_file_is_refused(ae, compressed, cut):
    with pytest.raises(DataError, match="truncated"):
        decompress(ae, compressed[:cut])


@pytest.mark.parametrize("position", [7, 9, 40, 120, 200, -2])
def test_a_corrupted_byte_fails_the_checksum(ae, compressed, position):
    damaged = bytearray(compressed)
    damaged[position] ^= 0x10
    with pytest.raises(DataError, match="checksum"):
        decompress(ae, bytes(damaged))


def test_another_version_and_another_format_are_refused(ae, compressed):
    other_version = with_crc(compressed[:4] + struct.pack("<H", 7) + compressed[6:-4])
    with pytest.raises(DataError, match="version 7 .* reads versions"):
        decompress(ae, other_version)
    with pytest.raises(DataError, match="not an aekit compressed file"):
        decompress(ae, b"PK\x03\x04" + compressed[4:])
    with pytest.raises(DataError, match="bytes after"):
        decompress(ae, compressed + b"\0")


@pytest.mark.parametrize(
    "layout, code",
    [
        (lambda x: x, codec.AS_MODEL),
        (lambda x: x[:, 0], codec.NO_CHANNEL),
        (lambda x: x.reshape(len(x), -1), codec.FLAT),
        (lambda x: x.transpose(0, 2, 3, 1), codec.CHANNELS_LAST),
    ],
)
def test_decompress_gives_back_the_layout_compress_was_given(digits, runs_dir, tmp_path, layout, code):
    x, run = digits.x_test[:30], runs_dir / "dae"
    model = run_folder.load(run)
    data = compress(model, layout(x), 8)
    assert data[7] == code and codec.decode(data, "f")[0].layout == code
    expected = decompress(model, compress(model, x, 8))  # the same codes, in the run's layout
    np.testing.assert_array_equal(decompress(model, data), layout(expected))
    np.save(tmp_path / "x.npy", layout(x))
    assert _cli("compress", run, tmp_path / "x.npy", "--bits", 8, "--out", tmp_path / "x.aekc") == 0
    assert _cli("decompress", run, tmp_path / "x.aekc", "--out", tmp_path / "back.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), layout(expected))
    # A file of before the layout was kept (byte 7 reserved, 0) gives the run's layout, as it did.
    np.testing.assert_array_equal(decompress(model, set_field(data, 7, "<B", 0)), expected)


def test_a_layout_the_run_cannot_have_is_a_corrupted_file(digits, ae):
    data = compress(ae, digits.x_test[:5], 8)
    with pytest.raises(DataError, match="claims layout 4 .* it is corrupted"):
        decompress(ae, set_field(data, 7, "<B", 4))
    flat = build_model(model_config("ae", (64,), code_dim=4, hidden=(16,))).eval()
    data = compress(flat, digits.x_test[:5].reshape(5, 64), 8)
    with pytest.raises(DataError, match="laid out no channel axis, which examples of 64 values cannot be"):
        decompress(flat, set_field(data, 7, "<B", codec.NO_CHANNEL))


def test_a_file_made_by_another_run_is_refused(digits, ae, compressed):
    other = _trained(digits, epochs=1, seed=1, model="ae", code_dim=8)
    with pytest.raises(DataError, match="different run"):
        decompress(other, compressed)
    # Even with the right fingerprint, a header whose code size differs from the run's is refused cleanly.
    header = compressed[:28] + struct.pack("<I", 7)
    lows, highs = compressed[32 : 32 + 4 * 7], compressed[32 + 4 * 8 : 32 + 4 * 15]
    forged = header + lows + highs + bytes(-(-50 * 7 * 6 // 8))
    with pytest.raises(DataError, match="codes of 7 dimensions"):
        decompress(ae, with_crc(forged))


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_compressed_files_give_data_errors_only(ae, compressed, data):
    kind = data.draw(st.sampled_from(["bytes", "flip", "header", "crc-fixed header"]))
    if kind == "bytes":
        blob = data.draw(st.binary(max_size=300))
    else:
        blob = bytearray(compressed)
        if kind == "flip":
            for _ in range(data.draw(st.integers(1, 4))):
                blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        else:
            fields = [(4, "<H"), (6, "<B"), (7, "<B"), (24, "<I"), (28, "<I"), (32, "<f"), (36, "<f")]
            field = data.draw(st.sampled_from(fields))
            value = data.draw(st.one_of(st.integers(0, 2**32 - 1), st.floats(allow_nan=True)))
            offset, fmt = field
            try:
                struct.pack_into(fmt, blob, offset, value)
            except (struct.error, OverflowError):
                return
            if kind == "crc-fixed header":
                blob = bytearray(with_crc(bytes(blob[:-4])))
        blob = bytes(blob)
    try:
        out = decompress(ae, blob)
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert np.isfinite(out).all()


def test_denoising_raises_psnr_over_the_noisy_input(digits):
    dae = _trained(digits, epochs=30, model="dae", code_dim=16, noise="gaussian", noise_level=0.3)
    clean = digits.x_test
    torch.manual_seed(1)
    noisy = corrupt(torch.from_numpy(clean), "gaussian", 0.3).numpy()
    assert psnr(denoise(dae, noisy), clean) > psnr(noisy, clean) + 3


@pytest.fixture(scope="module")
def upscaler(digits):
    return _trained(digits, epochs=30, model="ae", code_dim=32, task="upscale", factor=2)


def test_upscaling_beats_nearest_upsampling_on_held_out_data(digits, upscaler):
    clean = digits.x_test
    low = downsample(clean, 2)
    assert low.shape[1:] == (1, 4, 4)
    output = upscale(upscaler, low)
    assert output.shape == clean.shape
    # The encoder sees only the block average, so upscaling the small image equals reconstructing the large one.
    np.testing.assert_allclose(output, upscaler.reconstruct(clean), atol=1e-6)
    assert psnr(output, clean) > psnr(upsample(low, 2, "nearest"), clean) + 0.3
    metrics = evaluate(upscaler, digits)
    assert metrics["psnr_db"] == pytest.approx(psnr(output, clean))
    assert metrics["psnr_nearest_db"] < metrics["psnr_db"]


def test_upscale_settings_are_checked(digits):
    with pytest.raises(AekitError, match="multiples of 3"):
        model_config("ae", digits.shape, task="upscale", factor=3)
    with pytest.raises(AekitError, match="--task is an option of .* not of pca"):
        model_config("pca", digits.shape, task="upscale")
    with pytest.raises(AekitError, match="needs images"):
        model_config("ae", (64,), task="upscale")
    with pytest.raises(AekitError, match="unknown task"):
        model_config("ae", digits.shape, task="sharpen")


def test_each_use_refuses_the_wrong_kind_of_run(digits, ae, upscaler):
    with pytest.raises(AekitError, match="not trained to upscale"):
        upscale(ae, downsample(digits.x_test, 2))
    for use in (lambda: denoise(upscaler, digits.x_test), lambda: compress(upscaler, digits.x_test, 8)):
        with pytest.raises(AekitError, match="trained to upscale"):
            use()


def test_example_files_round_trip(tmp_path, digits):
    x = digits.x_test[:12]
    write_examples(tmp_path / "x.npy", x)
    assert np.array_equal(read_examples(tmp_path / "x.npy")[0], x)
    pixels = (x * 255).round() / 255
    for name in ("x-ubyte", "x.idx.gz"):
        write_examples(tmp_path / name, x)
        assert np.array_equal(read_examples(tmp_path / name)[0], pixels[:, 0])
    write_examples(tmp_path / "pngs", x, [f"class{i % 3}/img{i}.jpg" for i in range(12)])
    back, names, _ = read_examples(tmp_path / "pngs")
    assert names == sorted(f"class{i % 3}/img{i}.png" for i in range(12))
    order = [int(n.split("img")[1].split(".")[0]) for n in names]
    assert np.array_equal(back, pixels[order])
    with pytest.raises(DataError, match="already exists"):
        write_examples(tmp_path / "pngs", x)
    for layout in (x.reshape(12, 64), x[:, 0], x.transpose(0, 2, 3, 1)):  # flat, no channel axis, channels last
        shaped, back_to_layout = to_shape(layout, digits.shape, "s")
        assert np.array_equal(shaped, x) and np.array_equal(back_to_layout(shaped), layout)
    with pytest.raises(DataError, match="size 7x7 .* expects 8x8"):
        to_shape(np.zeros((2, 7, 7), np.float32), digits.shape, "s", "the run expects")


def _cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apps")
    common = {"hidden": (64, 32), "epochs": 10}
    train_run(folder / "dae", {"model": "dae", "code_dim": 12, **common}, device="cpu", progress=False)
    train_run(folder / "up", {"task": "upscale", "factor": 2, "code_dim": 24, **common}, device="cpu", progress=False)
    train_run(folder / "pca", {"model": "pca", "code_dim": 12}, device="cpu", progress=False)
    return folder


def test_the_commands_write_what_the_library_computes(runs_dir, digits, tmp_path, capsys):
    x = digits.x_test[:40]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "small.npy", downsample(x, 2))
    model = run_folder.load(runs_dir / "dae")
    assert _cli("denoise", runs_dir / "dae", tmp_path / "x.npy", "--out", tmp_path / "d.npy") == 0
    assert np.array_equal(np.load(tmp_path / "d.npy"), denoise(model, x))
    assert _cli("compress", runs_dir / "dae", tmp_path / "x.npy", "--bits", 5, "--out", tmp_path / "c.aekc") == 0
    assert (tmp_path / "c.aekc").read_bytes() == compress(model, x, 5)
    assert _cli("decompress", runs_dir / "dae", tmp_path / "c.aekc", "--out", tmp_path / "r.npy") == 0
    assert np.array_equal(np.load(tmp_path / "r.npy"), _expected_decoding(model, x, 5)[0])
    assert _cli("upscale", runs_dir / "up", tmp_path / "small.npy", "--out", tmp_path / "big") == 0
    assert len(list((tmp_path / "big").glob("*.png"))) == 40
    assert (runs_dir / "up" / "figures" / "upscaling.png").is_file()
    assert "psnr_bicubic_db" in run_folder.read_json(runs_dir / "up" / run_folder.METRICS)


@pytest.fixture(scope="module")
def inputs(runs_dir, digits, tmp_path_factory):
    """Input files, good and bad, for the commands."""
    folder = tmp_path_factory.mktemp("inputs")
    x = digits.x_test[:20]
    np.save(folder / "x.npy", x)
    np.save(folder / "small.npy", downsample(x, 2))
    (folder / "x.txt").write_text("1,2,3\n")
    good = compress(run_folder.load(runs_dir / "dae"), x, 8)
    (folder / "cut.aekc").write_bytes(good[:-10])
    flipped = bytearray(good)
    flipped[100] ^= 1
    (folder / "flipped.aekc").write_bytes(bytes(flipped))
    (folder / "v7.aekc").write_bytes(with_crc(good[:4] + struct.pack("<H", 7) + good[6:-4]))
    (folder / "other.aekc").write_bytes(compress(_trained(digits, epochs=1, model="ae", code_dim=12), x, 8))
    return folder


@pytest.mark.parametrize(
    "command, expected",
    [
        (lambda i, o, r: ["upscale", r / "up", i / "x.npy", "--out", o / "o"], "size 8x8 .* images of 4x4"),
        (lambda i, o, r: ["denoise", r / "dae", i / "small.npy", "--out", o / "o.npy"], "size 4x4 .* examples of 8x8"),
        (lambda i, o, r: ["decompress", r / "dae", i / "cut.aekc", "--out", o / "o.npy"], "truncated"),
        (lambda i, o, r: ["decompress", r / "dae", i / "flipped.aekc", "--out", o / "o"], "checksum"),
        (lambda i, o, r: ["decompress", r / "dae", i / "v7.aekc", "--out", o / "o.npy"], "version 7"),
        (lambda i, o, r: ["decompress", r / "dae", i / "other.aekc", "--out", o / "o.npy"], "different run"),
        (lambda i, o, r: ["compress", r / "dae", i / "x.npy", "--bits", 0, "--out", o / "o.aekc"], "--bits 0"),
        (lambda i, o, r: ["compress", r / "up", i / "x.npy", "--bits", 8, "--out", o / "o.aekc"], "trained to upscale"),
        (lambda i, o, r: ["denoise", r / "dae", i / "x.npy", "--out", o / "existing"], "already exists"),
        (lambda i, o, r: ["denoise", r / "dae", i / "x.txt", "--out", o / "o.npy"], "unsupported input"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(runs_dir, inputs, tmp_path, capsys, command, expected):
    (tmp_path / "existing").mkdir()
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert _cli(*command(inputs, tmp_path, runs_dir)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(expected, err), err
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", ["forged-ubyte.gz", "forged-ubyte"])
@pytest.mark.parametrize("command", [["denoise"], ["compress", "--bits", 6]])
def test_an_idx_input_whose_header_lies_about_its_size_is_one_line_exit_2(runs_dir, tmp_path, capsys, name, command):
    # A 137 GB promise (10^9 images of 137 bytes) in a file of a few dozen bytes: MemoryError from gzip before.
    import gzip

    data = bytes([0, 0, 8, 2]) + (10**9).to_bytes(4, "big") + (137).to_bytes(4, "big") + bytes(64)
    (tmp_path / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    out = tmp_path / ("out.npy" if command[0] == "denoise" else "out.aekc")
    assert _cli(command[0], runs_dir / "dae", tmp_path / name, *command[1:], "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aekit: error: ") and "Traceback" not in err, err
    assert name in err and "137000000012 bytes" in err, err
    assert set(tmp_path.iterdir()) == before


# Outputs: an existing one is replaced only with --overwrite, and a command's input or run never.


def _one_line_refusal(capsys, argv, *patterns):
    capsys.readouterr()
    assert _cli(*argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aekit: error: ") and "Traceback" not in err, err
    for pattern in patterns:
        assert re.search(pattern, err), (pattern, err)


def _tree(folder):
    """Every path under ``folder`` with a file's bytes (None for a folder or a link's target's kind)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def written(runs_dir, digits, tmp_path):
    """A folder with 20 test digits (x.npy), their compressed file and their PNGs, written by the commands."""
    np.save(tmp_path / "x.npy", digits.x_test[:20])
    assert _cli("compress", runs_dir / "dae", tmp_path / "x.npy", "--bits", 6, "--out", tmp_path / "x.aekc") == 0
    assert _cli("denoise", runs_dir / "dae", tmp_path / "x.npy", "--out", tmp_path / "pngs") == 0
    return tmp_path


@pytest.mark.parametrize(
    "argv, what",
    [
        (lambda w, r: ["denoise", r / "dae", w / "x.npy", "--out", w / "x.npy"], "is, or holds, .*x.npy"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy", "--out", w / "." / "x.npy"], "is, or holds"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy", "--out", w / "link.npy"], "is, or holds"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy", "--out", w / "hard.npy"], "is, or holds"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy", "--out", w], "is, or holds"),
        (lambda w, r: ["denoise", r / "dae", w / "pngs", "--out", w / "pngs"], "is, or holds"),
        (lambda w, r: ["denoise", r / "dae", w / "pngs", "--out", w / "pngs" / "sub"], "lies in .*pngs"),
        (lambda w, r: ["upscale", r / "up", w / "pngs", "--out", w / "pngs"], "is, or holds"),
        (lambda w, r: ["compress", r / "dae", w / "link.aekc", "--bits", 6, "--out", w / "link.aekc"], "is, or holds"),
        (lambda w, r: ["decompress", r / "dae", w / "x.aekc", "--out", r / "dae"], "is, or holds, .*dae"),
        (lambda w, r: ["decompress", r / "dae", w / "x.aekc", "--out", r], "is, or holds, .*dae"),
        (lambda w, r: ["score", r / "dae", w / "x.npy", "--out", r / "dae" / "config.csv"], None),
        (lambda w, r: ["export-projector", r / "dae", "--out", r / "dae"], "is, or holds, .*dae"),
    ],
)
def test_no_command_writes_over_its_input_or_run_even_with_overwrite(runs_dir, written, capsys, argv, what):
    (written / "link.npy").symlink_to(written / "x.npy")
    os.link(written / "x.npy", written / "hard.npy")
    (written / "link.aekc").symlink_to(written / "x.aekc")
    (written / "pngs" / "sub").mkdir()
    before, run_before = _tree(written), _tree(runs_dir)
    argv = argv(written, runs_dir)
    if what is None:  # not refused: the run folder may hold an output (it reads none of it)
        assert _cli(*argv, "--overwrite") == 0
        (runs_dir / "dae" / "config.csv").unlink()
        (runs_dir / "dae" / "config.png").unlink()
    else:
        _one_line_refusal(capsys, [*argv, "--overwrite"], what, "choose an(other)? --out")
    assert _tree(written) == before and _tree(runs_dir) == run_before


@pytest.mark.parametrize(
    "argv, out",
    [
        (lambda w, r: ["compress", r / "dae", w / "x.npy", "--bits", 4], "x.aekc"),
        (lambda w, r: ["decompress", r / "dae", w / "x.aekc"], "new.npy"),
        (lambda w, r: ["decompress", r / "dae", w / "x.aekc"], "pngs"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy"], "new.idx.gz"),
        (lambda w, r: ["denoise", r / "dae", w / "x.npy"], "pngs"),
        (lambda w, r: ["upscale", r / "up", w / "small.npy"], "new.npy"),
        (lambda w, r: ["score", r / "dae", w / "x.npy"], "new.csv"),
        (lambda w, r: ["score", r / "dae", w / "x.npy"], "x.csv"),  # x.png alone exists: the histogram's
        (lambda w, r: ["export-projector", r / "dae"], "pngs"),
    ],
)
def test_an_existing_output_is_refused_unless_overwrite_then_replaced_whole(
    runs_dir, written, digits, capsys, argv, out
):
    np.save(written / "small.npy", downsample(digits.x_test[:20], 2))
    (written / "new.npy").write_bytes(b"mine")
    (written / "new.idx.gz").write_bytes(b"mine")
    (written / "new.csv").write_bytes(b"mine")
    (written / "x.png").write_bytes(b"mine")
    (written / "pngs" / "mine").write_bytes(b"mine")  # gone once the folder is replaced
    taken = written / ("x.png" if out == "x.csv" else out)
    kept = _tree(written)
    argv = [*argv(written, runs_dir), "--out", written / out]
    _one_line_refusal(capsys, argv, f"{re.escape(str(taken))} already exists; add --overwrite")
    assert _tree(written) == kept
    assert _cli(*argv, "--overwrite") == 0
    after = _tree(written)
    hidden = [name for name in after if any(part.startswith(".") for part in Path(name).parts)]
    assert not hidden, hidden  # no temporary file or folder, nor the old output moved aside, is left
    outputs = {out, str(Path(out).with_suffix(".png"))} if argv[0] == "score" else {out}
    changed = {name for name in set(after) | set(kept) if after.get(name, 0) != kept.get(name, 0)}
    assert changed and all(name in outputs or name.startswith(out + "/") for name in changed), changed
    if taken.is_file():
        assert taken.read_bytes() != b"mine"


@pytest.mark.parametrize(
    "argv, out, pattern",
    [
        (["compress", "dae", "x.npy", "--bits", 6], "codes.npy", r"ends in \.aekc.*e\.g\. codes\.aekc"),
        (["compress", "dae", "x.npy", "--bits", 6], "x.npy", r"ends in \.aekc"),  # its input, too
        (["compress", "dae", "x.npy", "--bits", 6], "codes.png", r"ends in \.aekc"),
        (["compress", "dae", "x.npy", "--bits", 6], "codes", r"ends in \.aekc.*e\.g\. codes\.aekc"),
        (["decompress", "dae", "x.aekc"], "back.png", r"named like a \.png file.*name a folder"),
        (["decompress", "dae", "x.aekc"], "back.JPG", r"named like a \.JPG file"),
        (["decompress", "dae", "x.aekc"], "back.aekc", r"named like a \.aekc file"),
        (["denoise", "dae", "x.npy"], "clean.jpeg", r"named like a \.jpeg file"),
        (["upscale", "up", "x.npy"], "big.png", r"named like a \.png file"),
    ],
)
def test_an_output_is_named_for_what_it_holds(runs_dir, written, capsys, argv, out, pattern):
    command, run, *rest = argv
    kept = _tree(written)
    argv = [command, runs_dir / run, *(written / a if str(a).startswith("x.") else a for a in rest)]
    _one_line_refusal(capsys, [*argv, "--out", written / out], pattern)
    _one_line_refusal(capsys, [*argv, "--out", written / out, "--overwrite"], pattern)
    assert _tree(written) == kept


# Chunks: the jobs on files read and write a chunk of examples at a time (aekit.uses.file_jobs.CHUNK_BYTES).

# Batches of two examples, and three batches (six 8x8 examples) a chunk against one chunk for everything.
TINY_BATCH, TINY_CHUNK, ONE_CHUNK = 2, 6 * 64 * 4, 1 << 40


def _contents(path):
    """A file's bytes, or a folder's files by relative name with their bytes."""
    if path.is_dir():
        return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}
    return path.read_bytes()


@pytest.fixture(scope="module")
def every_input(digits, tmp_path_factory):
    """40 test digits in each input form: float32 and uint8 .npy, IDX plain and gzipped, PNGs and a store."""
    from aekit.data.store.writer import pack

    folder = tmp_path_factory.mktemp("every-input")
    x = digits.x_test[:40]
    pixels = np.round(x[:, 0] * 255).astype(np.uint8)
    np.save(folder / "x.npy", x)
    np.save(folder / "u8.npy", pixels)
    (folder / "x-ubyte").write_bytes(idx_bytes(pixels))
    (folder / "x.idx.gz").write_bytes(idx_bytes(pixels, gzipped=True))
    write_examples(folder / "pngs", x)
    pack(str(folder / "u8.npy"), folder / "store", workers=1, progress=False)
    return folder


def _both_ways(monkeypatch, tmp_path, out_name, *argv):
    """The outputs of `aekit ARGV --out OUT` in one chunk and in chunks of six examples."""
    outputs, batched, chunks = [], file_jobs.batched, []
    # Models give the same row slightly different bits in batches of different sizes, so both use one size.
    monkeypatch.setattr(file_jobs, "BATCH_ROWS", TINY_BATCH)
    monkeypatch.setattr(
        file_jobs, "batched", lambda model, method, x: chunks.append(len(x)) or batched(model, method, x)
    )
    for chunk_bytes in (ONE_CHUNK, TINY_CHUNK):
        monkeypatch.setattr(file_jobs, "CHUNK_BYTES", chunk_bytes)
        out = tmp_path / ("whole" if chunk_bytes == ONE_CHUNK else "chunked") / out_name
        out.parent.mkdir(exist_ok=True)
        chunks.clear()
        assert _cli(*argv, "--out", out) == 0
        assert chunks == ([40] if chunk_bytes == ONE_CHUNK else [6] * 6 + [4])
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("out_name", ["o.npy", "o-ubyte", "o.idx.gz", "pngs"])
@pytest.mark.parametrize("source", ["x.npy", "u8.npy", "x-ubyte", "x.idx.gz", "pngs", "store"])
def test_denoising_in_chunks_writes_what_one_chunk_writes(
    runs_dir, every_input, tmp_path, monkeypatch, source, out_name
):
    whole, chunked = _both_ways(monkeypatch, tmp_path, out_name, "denoise", runs_dir / "dae", every_input / source)
    assert _contents(chunked) == _contents(whole)
    if out_name == "o.npy":  # and that is what the library computes, in the input's type and layout
        examples = read_examples(every_input / source)
        x = np.asarray(examples.x)
        expected = denoise(run_folder.load(runs_dir / "dae"), x.reshape(len(x), 1, 8, 8)).reshape(x.shape)
        if examples.dtype == np.uint8:
            expected = np.round(np.clip(expected, 0, 1) * 255).astype(np.uint8)
        assert np.array_equal(np.load(whole), expected)


def test_upscaling_compressing_and_decompressing_in_chunks_write_what_one_chunk_writes(
    runs_dir, digits, tmp_path, monkeypatch
):
    x = digits.x_test[:40]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "small.npy", downsample(x, 2))
    for argv, out_name in (
        (("upscale", runs_dir / "up", tmp_path / "small.npy"), "big.npy"),
        (("upscale", runs_dir / "up", tmp_path / "small.npy"), "big"),
        (("compress", runs_dir / "dae", tmp_path / "x.npy", "--bits", 6), "c.aekc"),
        (("decompress", runs_dir / "dae", tmp_path / "c.aekc"), "r.npy"),
        (("decompress", runs_dir / "dae", tmp_path / "c.aekc"), "r.idx.gz"),
        (("decompress", runs_dir / "dae", tmp_path / "c.aekc"), "r"),
    ):
        whole, chunked = _both_ways(monkeypatch, tmp_path, out_name, *argv)
        assert _contents(chunked) == _contents(whole), argv
        if out_name == "c.aekc":
            whole.rename(tmp_path / out_name)


@pytest.mark.parametrize("out_name", ["o.npy", "o.idx.gz", "pngs"])
def test_a_bad_value_in_the_last_chunk_leaves_no_output(runs_dir, digits, tmp_path, monkeypatch, capsys, out_name):
    x = digits.x_test[:40].copy()
    x[-1, 0, 3, 3] = 1.5
    np.save(tmp_path / "x.npy", x)
    batched, chunks = file_jobs.batched, []
    monkeypatch.setattr(
        file_jobs, "batched", lambda model, method, x: chunks.append(len(x)) or batched(model, method, x)
    )
    monkeypatch.setattr(file_jobs, "BATCH_ROWS", TINY_BATCH)
    monkeypatch.setattr(file_jobs, "CHUNK_BYTES", TINY_CHUNK)
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert _cli("denoise", runs_dir / "dae", tmp_path / "x.npy", "--out", tmp_path / out_name) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"holds values in \[\S+, 1\.5\] but the run models \[0, 1\]", err), err
    assert chunks == [6] * 6  # the first six chunks went through before the seventh was refused
    assert set(tmp_path.iterdir()) == before  # neither the output nor a temporary file


@pytest.mark.parametrize("out_name", ["o.npy", "o-ubyte", "pngs"])
def test_an_interrupted_job_leaves_no_output(runs_dir, digits, tmp_path, monkeypatch, out_name):
    np.save(tmp_path / "x.npy", digits.x_test[:40])
    batched, chunks = file_jobs.batched, []

    def interrupted(model, method, x):
        chunks.append(len(x))
        if len(chunks) == 4:
            raise KeyboardInterrupt
        return batched(model, method, x)

    monkeypatch.setattr(file_jobs, "batched", interrupted)
    monkeypatch.setattr(file_jobs, "BATCH_ROWS", TINY_BATCH)
    monkeypatch.setattr(file_jobs, "CHUNK_BYTES", TINY_CHUNK)
    before = set(tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        denoise_files(runs_dir / "dae", tmp_path / "x.npy", tmp_path / out_name)
    assert set(tmp_path.iterdir()) == before


# A job in its own process, printing its peak anonymous resident memory (RssAnon: the process's own pages, not the
# page cache of the files it maps), sampled every 5 ms.
_PEAK_ANON = """
import json, sys, threading

def anon_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("RssAnon:"))

peak, done = [anon_mib()], threading.Event()

def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], anon_mib())

threading.Thread(target=sample, daemon=True).start()
from aekit.cli import main
status = main(sys.argv[1:])
done.set()
print(json.dumps({"status": status, "peak_anon_mib": max(peak[0], anon_mib())}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc (Linux)")
@pytest.mark.slow
def test_denoising_memory_does_not_grow_with_the_input(runs_dir, tmp_path):
    peaks = {}
    block = (np.arange(65536 * 64) % 251).astype(np.uint8).reshape(65536, 8, 8)
    for megabytes in (40, 400):
        source, out = tmp_path / f"{megabytes}.npy", tmp_path / f"{megabytes}-out.npy"
        rows = megabytes * 2**20 // 64
        with source.open("wb") as file:  # written in blocks, so this process never holds the data
            np.lib.format.write_array_header_1_0(file, {"descr": "|u1", "fortran_order": False, "shape": (rows, 8, 8)})
            for start in range(0, rows, len(block)):
                file.write(block[: rows - start].tobytes())
        # PCA, the cheapest model: the reading, converting and writing around it are what is measured.
        argv = ["denoise", str(runs_dir / "pca"), str(source), "--out", str(out)]
        result = subprocess.run(
            [sys.executable, "-c", _PEAK_ANON, *argv], capture_output=True, text=True, env=ENV, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.splitlines()[-1])
        assert report["status"] == 0, result.stderr[-3000:]
        peaks[megabytes] = report["peak_anon_mib"]
        denoised = np.load(out, mmap_mode="r")
        assert denoised.shape == (rows, 8, 8) and denoised.dtype == np.uint8
        last = slice(rows - 1000, rows)  # the end of the file: every chunk was written, in order
        expected = run_folder.load(runs_dir / "pca").reconstruct(np.load(source, mmap_mode="r")[last])
        assert np.array_equal(denoised[last], expected)
        del denoised
        source.unlink()
        out.unlink()
    print(
        f"peak anonymous memory of `aekit denoise` (MiB): {peaks[40]:.0f} for 40 MB of input, {peaks[400]:.0f} for 400"
    )
    # 360 MB more input (1,440 MB more as float32, 343 MiB as its own uint8): under 100 MiB more memory (measured:
    # 10 to 49 MiB more, the most on a loaded machine).
    assert peaks[400] < peaks[40] + 100, peaks


def test_a_codebook_run_compresses_its_indices_losslessly_from_the_command_line(tmp_path, digits, capsys):
    run = tmp_path / "vq"
    options = {"model": "vqvae", "code_dim": 8, "codebook_size": 16, "hidden": (32,), "epochs": 2}
    train_run(run, options, device="cpu", progress=False)
    model = run_folder.load(run)
    x = digits.x_test[:40]
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "x.aekc")]) == 0
    data = (tmp_path / "x.aekc").read_bytes()
    assert len(data) < 32 + 4 + 40 * 8 * 4 // 8 + 4 + 8, "8 indices of 4 bits an example, and the header"
    assert main(["decompress", str(run), str(tmp_path / "x.aekc"), "--out", str(tmp_path / "y.npy")]) == 0
    expected = model.decode_indices(model.code_indices(torch.from_numpy(x)))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected.detach().numpy())
    np.testing.assert_array_equal(decompress(model, compress(model, x)), np.load(tmp_path / "y.npy"))
    capsys.readouterr()
    assert main(["compress", str(run), str(tmp_path / "x.npy"), "--bits", "4", "--out", str(tmp_path / "z.aekc")]) == 2
    assert "drop --bits" in capsys.readouterr().err and not (tmp_path / "z.aekc").exists()
    ae = tmp_path / "ae"
    train_run(ae, {"model": "ae", "code_dim": 4, "hidden": (16,), "epochs": 1}, device="cpu", progress=False)
    assert main(["compress", str(ae), str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.aekc")]) == 2
    assert "give --bits B" in capsys.readouterr().err and not (tmp_path / "z.aekc").exists()
