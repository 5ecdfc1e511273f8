"""Uses of the codes: compression (the file format and its round trip), denoising and super-resolution."""
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aekit import apps, codec, runs
from aekit.cli import main
from aekit.data.files import read_examples, write_examples
from aekit.data.layout import to_shape
from aekit.errors import AekitError, DataError
from aekit.evaluate import downsample, evaluate, psnr, upsample
from aekit.models import ModelSpec, build_model, corrupt
from aekit.trainer import TrainSettings, train
from aekit.workflow import train_run


def _trained(digits, epochs=15, seed=0, **spec):
    torch.manual_seed(seed)
    model = build_model(ModelSpec(shape=digits.shape, hidden=(64, 32), **spec))
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
    levels = 2 ** bits - 1
    q = np.round(np.divide(z - low.astype(np.float64), span, out=np.zeros(z.shape), where=span > 0) * levels)
    restored = (low + q * (span / levels)).astype(np.float32)
    return model.decode(restored), q


@pytest.fixture(scope="module")
def models(digits, ae):
    pca = build_model(ModelSpec("pca", digits.shape, code_dim=8)).fit(digits.x_train)
    return {"ae": ae, "vae": _trained(digits, epochs=2, model="vae", code_dim=8), "pca": pca}


@pytest.mark.parametrize("model_name", ["ae", "vae", "pca"])
@pytest.mark.parametrize("bits", [1, 5, 8, 16])
def test_decompress_equals_the_decoding_of_the_quantized_code_exactly(digits, models, model_name, bits):
    model = models[model_name]
    x = digits.x_test
    data = apps.compress(model, x, bits)
    expected, q = _expected_decoding(model, x, bits)
    assert len(data) == 32 + 8 * 8 + -(-len(x) * 8 * bits // 8) + 4
    assert np.array_equal(codec.decode(data, "f")[0].q, q)
    assert np.array_equal(apps.decompress(model, data), expected)


def test_more_bits_give_smaller_errors_down_to_the_plain_reconstruction(digits, ae):
    x = digits.x_test
    errors = [((apps.decompress(ae, apps.compress(ae, x, b)) - x) ** 2).sum() for b in (1, 2, 4, 8, 16)]
    # Past 8 bits the quantization error is far below the model's own and may even cancel a little of it.
    assert errors[:4] == sorted(errors[:4], reverse=True)
    plain = ((ae.reconstruct(x) - x) ** 2).sum()
    assert errors[-1] == pytest.approx(plain, rel=1e-4)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def compressed(digits, ae):
    return apps.compress(ae, digits.x_test[:50], 6)


@pytest.mark.parametrize("cut", [0, 3, 20, 35, 60, 100, -1])
def test_a_truncated_file_is_refused(ae, compressed, cut):
    with pytest.raises(DataError, match="truncated"):
        apps.decompress(ae, compressed[:cut])


@pytest.mark.parametrize("position", [7, 9, 40, 120, 200, -2])
def test_a_corrupted_byte_fails_the_checksum(ae, compressed, position):
    damaged = bytearray(compressed)
    damaged[position] ^= 0x10
    with pytest.raises(DataError, match="checksum"):
        apps.decompress(ae, bytes(damaged))


def test_another_version_and_another_format_are_refused(ae, compressed):
    other_version = _with_crc(compressed[:4] + struct.pack("<H", 2) + compressed[6:-4])
    with pytest.raises(DataError, match="version 2 .* reads version 1"):
        apps.decompress(ae, other_version)
    with pytest.raises(DataError, match="not an aekit compressed file"):
        apps.decompress(ae, b"PK\x03\x04" + compressed[4:])
    with pytest.raises(DataError, match="bytes after"):
        apps.decompress(ae, compressed + b"\0")


def test_a_file_made_by_another_run_is_refused(digits, ae, compressed):
    other = _trained(digits, epochs=1, seed=1, model="ae", code_dim=8)
    with pytest.raises(DataError, match="different run"):
        apps.decompress(other, compressed)
    # Even with the right fingerprint, a header whose code size differs from the run's is refused cleanly.
    header = compressed[:28] + struct.pack("<I", 7)
    lows, highs = compressed[32:32 + 4 * 7], compressed[32 + 4 * 8:32 + 4 * 15]
    forged = header + lows + highs + bytes(-(-50 * 7 * 6 // 8))
    with pytest.raises(DataError, match="codes of 7 dimensions"):
        apps.decompress(ae, _with_crc(forged))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
            field = data.draw(st.sampled_from([(4, "<H"), (6, "<B"), (24, "<I"), (28, "<I"), (32, "<f"), (36, "<f")]))
            value = data.draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.floats(allow_nan=True)))
            offset, fmt = field
            try:
                struct.pack_into(fmt, blob, offset, value)
            except (struct.error, OverflowError):
                return
            if kind == "crc-fixed header":
                blob = bytearray(_with_crc(bytes(blob[:-4])))
        blob = bytes(blob)
    try:
        out = apps.decompress(ae, blob)
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert np.isfinite(out).all()


def test_denoising_raises_psnr_over_the_noisy_input(digits):
    dae = _trained(digits, epochs=30, model="dae", code_dim=16, noise="gaussian", noise_level=0.3)
    clean = digits.x_test
    torch.manual_seed(1)
    noisy = corrupt(torch.from_numpy(clean), "gaussian", 0.3).numpy()
    assert psnr(apps.denoise(dae, noisy), clean) > psnr(noisy, clean) + 3


@pytest.fixture(scope="module")
def upscaler(digits):
    return _trained(digits, epochs=30, model="ae", code_dim=32, task="upscale", factor=2)


def test_upscaling_beats_nearest_upsampling_on_held_out_data(digits, upscaler):
    clean = digits.x_test
    low = downsample(clean, 2)
    assert low.shape[1:] == (1, 4, 4)
    output = apps.upscale(upscaler, low)
    assert output.shape == clean.shape
    # The encoder sees only the block average, so upscaling the small image equals reconstructing the large one.
    np.testing.assert_allclose(output, upscaler.reconstruct(clean), atol=1e-6)
    assert psnr(output, clean) > psnr(upsample(low, 2, "nearest"), clean) + 0.3
    metrics = evaluate(upscaler, digits)
    assert metrics["psnr_db"] == pytest.approx(psnr(output, clean))
    assert metrics["psnr_nearest_db"] < metrics["psnr_db"]


def test_upscale_settings_are_checked(digits):
    with pytest.raises(AekitError, match="multiples of 3"):
        ModelSpec("ae", digits.shape, task="upscale", factor=3)
    with pytest.raises(AekitError, match="PCA has none"):
        ModelSpec("pca", digits.shape, task="upscale")
    with pytest.raises(AekitError, match="needs images"):
        ModelSpec("ae", (64,), task="upscale")
    with pytest.raises(AekitError, match="unknown task"):
        ModelSpec("ae", digits.shape, task="sharpen")


def test_each_use_refuses_the_wrong_kind_of_run(digits, ae, upscaler):
    with pytest.raises(AekitError, match="not trained to upscale"):
        apps.upscale(ae, downsample(digits.x_test, 2))
    for use in (lambda: apps.denoise(upscaler, digits.x_test), lambda: apps.compress(upscaler, digits.x_test, 8)):
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
    train_run(folder / "up", {"task": "upscale", "factor": 2, "code_dim": 24, **common}, device="cpu",
              progress=False)
    return folder


def test_the_commands_write_what_the_library_computes(runs_dir, digits, tmp_path, capsys):
    x = digits.x_test[:40]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "small.npy", downsample(x, 2))
    model = runs.load(runs_dir / "dae")
    assert _cli("denoise", runs_dir / "dae", tmp_path / "x.npy", "--out", tmp_path / "d.npy") == 0
    assert np.array_equal(np.load(tmp_path / "d.npy"), apps.denoise(model, x))
    assert _cli("compress", runs_dir / "dae", tmp_path / "x.npy", "--bits", 5, "--out", tmp_path / "c.aekc") == 0
    assert (tmp_path / "c.aekc").read_bytes() == apps.compress(model, x, 5)
    assert _cli("decompress", runs_dir / "dae", tmp_path / "c.aekc", "--out", tmp_path / "r.npy") == 0
    assert np.array_equal(np.load(tmp_path / "r.npy"), _expected_decoding(model, x, 5)[0])
    assert _cli("upscale", runs_dir / "up", tmp_path / "small.npy", "--out", tmp_path / "big") == 0
    assert len(list((tmp_path / "big").glob("*.png"))) == 40
    assert (runs_dir / "up" / "figures" / "upscaling.png").is_file()
    assert "psnr_bicubic_db" in runs.read_json(runs_dir / "up" / runs.METRICS)


@pytest.fixture(scope="module")
def inputs(runs_dir, digits, tmp_path_factory):
    """Input files, good and bad, for the commands."""
    folder = tmp_path_factory.mktemp("inputs")
    x = digits.x_test[:20]
    np.save(folder / "x.npy", x)
    np.save(folder / "small.npy", downsample(x, 2))
    (folder / "x.txt").write_text("1,2,3\n")
    good = apps.compress(runs.load(runs_dir / "dae"), x, 8)
    (folder / "cut.aekc").write_bytes(good[:-10])
    flipped = bytearray(good)
    flipped[100] ^= 1
    (folder / "flipped.aekc").write_bytes(bytes(flipped))
    (folder / "v2.aekc").write_bytes(_with_crc(good[:4] + struct.pack("<H", 2) + good[6:-4]))
    (folder / "other.aekc").write_bytes(apps.compress(_trained(digits, epochs=1, model="ae", code_dim=12), x, 8))
    return folder


@pytest.mark.parametrize("command, expected", [
    (lambda i, o, r: ["upscale", r / "up", i / "x.npy", "--out", o / "o"], "size 8x8 .* images of 4x4"),
    (lambda i, o, r: ["denoise", r / "dae", i / "small.npy", "--out", o / "o.npy"], "size 4x4 .* examples of 8x8"),
    (lambda i, o, r: ["decompress", r / "dae", i / "cut.aekc", "--out", o / "o.npy"], "truncated"),
    (lambda i, o, r: ["decompress", r / "dae", i / "flipped.aekc", "--out", o / "o"], "checksum"),
    (lambda i, o, r: ["decompress", r / "dae", i / "v2.aekc", "--out", o / "o.npy"], "version 2"),
    (lambda i, o, r: ["decompress", r / "dae", i / "other.aekc", "--out", o / "o.npy"], "different run"),
    (lambda i, o, r: ["compress", r / "dae", i / "x.npy", "--bits", 0, "--out", o / "o.aekc"], "--bits 0"),
    (lambda i, o, r: ["compress", r / "up", i / "x.npy", "--bits", 8, "--out", o / "o.aekc"], "trained to upscale"),
    (lambda i, o, r: ["denoise", r / "dae", i / "x.npy", "--out", o / "existing"], "already exists"),
    (lambda i, o, r: ["denoise", r / "dae", i / "x.txt", "--out", o / "o.npy"], "unsupported input"),
])
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
