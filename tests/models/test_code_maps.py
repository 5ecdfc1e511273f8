"""Fully convolutional rate-distortion models (``--net fully-conv``): the code is a map, images of any size are coded
whole (codec version 4, each image's size and its code map's in the header), and decompression gives the model's
decoding of each map at its image's size, bit for bit; version 5 keeps the images' names, and no name a file holds
writes outside the output folder; a damaged version 4 or 5 file is one line."""

import struct

import numpy as np
import pytest
import torch
from helpers import set_field, with_crc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import aekit
from aekit import codec
from aekit.cli import main
from aekit.errors import AekitError, DataError
from aekit.jobs.workflow import train_run
from aekit.models import build_model, model_config
from aekit.models.inference import codes as codes_of
from aekit.training import run_folder
from aekit.uses.compress import (
    _entropy_decoded,
    compress,
    compress_images,
    compressed_names,
    decompress,
    decompress_files,
    decompress_images,
)

SIZES = [(8, 8), (13, 5), (1, 1), (30, 17), (8, 8)]
LISTING = 40  # version 4: the shared 32 bytes, the tables' checksum and the number of words, then the sizes


def _images(digits) -> list[np.ndarray]:
    """Images of several sizes made of the digits (tiled and cut), intensities in [0, 1]."""
    mosaic = np.block([[digits.x_test[5 * i + j, 0] for j in range(5)] for i in range(5)])
    return [mosaic[None, i : i + h, i : i + w].copy() for i, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    run = tmp_path_factory.mktemp("maps") / "run"
    options = {"model": "rd-ae", "net": "fully-conv", "code_dim": 4, "hidden": (16,), "rate_lambda": 0.1}
    model, metrics = train_run(run, {**options, "epochs": 12, "batch_size": 64}, device="cpu", progress=False)
    return run, model.eval(), metrics


def test_the_code_is_a_map_at_half_the_size_and_its_rate_counts_every_position(digits, trained):
    _, model, metrics = trained
    x = torch.from_numpy(digits.x_test[:16])
    assert model.fully_convolutional and model.code_shape == (4, 4, 4)
    codes = model.encode(x).detach()
    assert codes.shape == (16, 4, 4, 4) and torch.equal(codes, codes.round())
    with torch.no_grad():  # channel j's values, wherever they lie in the map, under density j
        values = codes.movedim(1, 0).reshape(4, -1)
        expected = -torch.log2(model.prior.mass(values)).reshape(4, 16, 16).sum((0, 2))
    np.testing.assert_allclose(model.rate_bits(digits.x_test[:16]), expected.numpy(), rtol=1e-5)
    assert metrics["rate_bits_per_example"] < 0.5 * 64 * 8  # learned: well under a byte a pixel
    flat = codes_of(model, digits.x_test[:16])
    assert flat.shape == (16, 64)  # probes, projector and figures take one vector an example
    np.testing.assert_array_equal(model.decode(flat), model.decode(codes.numpy()))


def test_images_of_any_size_are_coded_whole_and_decode_bit_for_bit(digits, trained):
    _, model, _ = trained
    images = _images(digits)
    data = compress_images(model, images)
    assert data[4:6] == struct.pack("<H", codec.MAPS)
    n, d = struct.unpack_from("<II", data, 24)
    sizes = np.frombuffer(data, "<u4", 4 * n, LISTING).reshape(n, 4)
    assert (n, d) == (5, 4)
    assert sizes.tolist() == [[h, w, -(-h // 2), -(-w // 2)] for h, w in SIZES]
    restored = decompress_images(model, data)
    for image, back in zip(images, restored):
        with torch.no_grad():
            y = model.map_symbols(torch.from_numpy(image)[None])
            expected = model.decode_map(y, *image.shape[1:])[0].numpy()
        assert back.shape == image.shape
        np.testing.assert_array_equal(back, expected)
    with torch.no_grad():
        promised = sum(float(model.prior.rate_bits(model.map_symbols(torch.from_numpy(i)[None]))) for i in images)
    coded = 8 * (len(data) - LISTING - 16 * n - 4)
    assert promised <= coded <= 1.05 * promised + 64, (coded, promised)
    # At the training size the map file is the same as the array path's, and decompresses to one array.
    same = compress(model, digits.x_test[:3])
    assert same == compress_images(model, list(digits.x_test[:3]))
    np.testing.assert_array_equal(decompress(model, same), model.reconstruct(digits.x_test[:3]))
    with pytest.raises(DataError, match="holds images of other sizes than the run's 8x8"):
        decompress(model, data)


def test_the_command_line_codes_a_folder_of_odd_sized_images(digits, trained, tmp_path, capsys):
    run, _, _ = trained
    model = aekit.load(run)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    images = _images(digits)
    files = [folder / ("more/" if i == 3 else "") / f"{i}.png" for i in range(len(images))]
    for image, file in zip(images, files):
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(file)
    out = tmp_path / "photos.aekc"
    assert main(["compress", str(run), str(folder), "--out", str(out)]) == 0
    assert compressed_names(out.read_bytes()) == ["0.png", "1.png", "2.png", "4.png", "more/3.png"]
    assert main(["decompress", str(run), str(out), "--out", str(tmp_path / "back")]) == 0
    for file in files:  # each image under its own name
        back = tmp_path / "back" / file.relative_to(folder)
        pixels = np.asarray(Image.open(file), np.float32)[None] / 255
        with torch.no_grad():
            y = model.map_symbols(torch.from_numpy(pixels)[None])
            expected = model.decode_map(y, *pixels.shape[1:])[0].numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(back))[None], (expected * 255).round().astype(np.uint8))
    capsys.readouterr()
    assert main(["decompress", str(run), str(out), "--out", str(tmp_path / "back.npy")]) == 2
    err = capsys.readouterr().err
    assert "images of 4 sizes" in err and "name a new folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "back.npy").exists()
    assert main(["compress", str(run), str(files[3]), "--out", str(tmp_path / "one.aekc")]) == 0
    assert decompress_images(model, (tmp_path / "one.aekc").read_bytes())[0].shape == (1, 30, 17)
    assert compressed_names((tmp_path / "one.aekc").read_bytes()) == ["3.png"]


def test_names_are_kept_and_a_file_cannot_name_a_place_outside_the_output(digits, trained, tmp_path):
    _, model, _ = trained
    images = _images(digits)[:3]
    names = ["cat.jpg", "cat.png", "dogs/é 1.tif"]
    data = compress_images(model, images, names)
    assert data[4:6] == struct.pack("<H", codec.NAMED_MAPS) and compressed_names(data) == names
    for image, back in zip(images, decompress_images(model, data)):
        assert back.shape == image.shape
    assert compressed_names(compress_images(model, images)) is None  # version 4: no names
    stored, _ = codec.decode(data, "f")
    sizes, tables = [image.shape[1:] for image in images], model.probability_tables()
    maps = codec.code_maps(_entropy_decoded(model, stored, "f").astype(np.int64), stored.sizes)
    forged_files = {}
    for forged, problem in [
        (["../up", "b", "c"], "not a relative path"),
        (["/etc/x", "b", "c"], "not a relative path"),
        (["a//b", "b", "c"], "not a relative path"),
        (["a\\b", "b", "c"], "backslash"),
        (["a\nb", "b", "c"], "control character"),
        (["", "b", "c"], "0 bytes long"),
        (["x" * 1025, "b", "c"], "1025 bytes long"),
        (["b", "b", "c"], "same name"),
    ]:
        with pytest.raises(DataError, match=problem):
            compress_images(model, images, forged)
        # The same names forged into a file (the coder's own checks passed by): refused on reading, in one line.
        block = b"".join(struct.pack("<H", len(n.encode())) + n.encode() for n in forged)
        good = codec.encode_maps(maps, sizes, tables, run_folder.fingerprint(model), ["a", "b", "c"])
        at = LISTING + 16 * 3
        (size,) = struct.unpack_from("<I", good, at)
        bad = with_crc(good[:at] + struct.pack("<I", len(block)) + block + good[at + 4 + size : -4])
        with pytest.raises(DataError, match="lists the image name|two alike") as error:
            decompress_images(model, bad)
        assert "\n" not in str(error.value).replace("\\n", "")
        forged_files[forged[0]] = bad
    (tmp_path / "forged.aekc").write_bytes(forged_files["../up"])
    (tmp_path / "in").mkdir()
    run, _, _ = trained
    with pytest.raises(DataError, match="name '../up' is not a relative path"):
        decompress_files(run, tmp_path / "forged.aekc", tmp_path / "in" / "back")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["forged.aekc", "in"]


def test_images_whose_names_clash_as_pngs_keep_their_whole_names(digits, trained, tmp_path):
    run, model, _ = trained
    data = compress_images(model, _images(digits)[:3], ["cat.jpg", "cat.png", "dog.jpg"])
    (tmp_path / "f.aekc").write_bytes(data)
    assert decompress_files(run, tmp_path / "f.aekc", tmp_path / "back") == 3
    written = sorted(str(f.relative_to(tmp_path / "back")) for f in (tmp_path / "back").rglob("*.png"))
    assert written == ["cat.jpg.png", "cat.png.png", "dog.png"]


# Names a folder can hold that once made trouble: Pillow takes no suffix from "..png" (decompress ended in a
# traceback), and "c.jpg" would be written as c.png, where c.png/ is a folder.
TRICKY = {
    "..png": "..png",
    ".hidden.jpg": ".hidden.png",
    "a b.jpg": "a b.png",
    "é ü.jpeg": "é ü.png",
    "a.JPG": "a.png",
    "sub/..png": "sub/..png",
    "sub/....png": "sub/....png",
    "c.jpg": "c.jpg.png",
    "c.png/d.png": "c.png/d.png",
}


def test_every_name_a_folder_compresses_under_decompresses(digits, trained, tmp_path, capsys):
    run, model, _ = trained
    folder = tmp_path / "photos"
    images = dict(zip(TRICKY, _images(digits) * 2))
    for name, image in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(folder / name, format="PNG")
    out = tmp_path / "photos.aekc"
    assert main(["compress", str(run), str(folder), "--out", str(out)]) == 0
    assert sorted(compressed_names(out.read_bytes())) == sorted(TRICKY)
    assert main(["decompress", str(run), str(out), "--out", str(tmp_path / "back")]) == 0, capsys.readouterr().err
    written = sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*") if p.is_file())
    assert written == sorted(TRICKY.values())
    for name in images:
        pixels = np.asarray(Image.open(folder / name), np.float32)[None] / 255
        with torch.no_grad():
            expected = model.decode_map(model.map_symbols(torch.from_numpy(pixels)[None]), *pixels.shape[1:])[0]
        back = np.asarray(Image.open(tmp_path / "back" / TRICKY[name]))
        np.testing.assert_array_equal(back, (expected[0].numpy() * 255).round().astype(np.uint8))


def test_names_given_in_python_decompress_or_are_refused_when_compressing(digits, trained, tmp_path):
    run, model, _ = trained
    names = {".png": ".png.png", "a.": "a..png", "...": "....png", "t.jpg ": "t.png", "d/e": "d/e.png"}
    (tmp_path / "f.aekc").write_bytes(compress_images(model, _images(digits), list(names)))
    assert decompress_files(run, tmp_path / "f.aekc", tmp_path / "back") == 5
    written = sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*") if p.is_file())
    assert written == sorted(names.values())
    for refused, problem in [
        (["x" * 252 + ".tif", "b", "c"], "would be written to a name of over 255 bytes"),
        (["a.jpg", "a.jpg.png", "a.png"], "two images would be written to a.jpg.png"),
        (["a.jpg", "a.png/b.jpg", "a.jpg.png/c"], "two images would be written to a.jpg.png"),
    ]:
        with pytest.raises(DataError, match=problem):
            compress_images(model, _images(digits)[:3], refused)


def test_score_takes_images_of_any_size_each_scored_whole(digits, trained, tmp_path, capsys):
    import csv

    from aekit.evaluation.anomaly import anomaly_scores

    run, model, _ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    images = _images(digits)
    for i, image in enumerate(images):
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    pixels = [np.asarray(Image.open(folder / f"{i}.png"), np.float32)[None, None] / 255 for i in range(len(images))]
    with torch.no_grad():
        expected = [float(model.map_nll(torch.from_numpy(p))[0]) for p in pixels]
    # At the training size it is the reconstruction NLL that every run scores.
    np.testing.assert_allclose(expected[0], anomaly_scores(model, pixels[0][0][None]), rtol=1e-5)
    assert main(["score", str(run), str(folder), "--out", str(tmp_path / "s.csv")]) == 0, capsys.readouterr().err
    with open(tmp_path / "s.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["name"] for row in rows] == [f"{i}.png" for i in range(len(images))]
    np.testing.assert_allclose([float(row["reconstruction_nll"]) for row in rows], expected, rtol=1e-5)
    np.save(tmp_path / "small.npy", np.concatenate([pixels[1][:, 0]] * 3))  # three 13x5 images, (n, h, w)
    assert main(["score", str(run), str(tmp_path / "small.npy"), "--out", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv") as file:
        np.testing.assert_allclose(
            [float(row["reconstruction_nll"]) for row in csv.DictReader(file)], [expected[1]] * 3, rtol=1e-5
        )
    assert main(["score", str(run), str(folder / "3.png"), "--out", str(tmp_path / "one.csv")]) == 0
    # One image file, scored beside itself: its histogram would be the image, which is never written over.
    capsys.readouterr()
    assert main(["score", str(run), str(folder / "3.png"), "--out", str(folder / "3.csv"), "--overwrite"]) == 2
    assert "is, or holds" in capsys.readouterr().err and not (folder / "3.csv").exists()


def test_fully_convolutional_nets_are_refused_where_they_cannot_work(digits, trained):
    with pytest.raises(AekitError, match="--net fully-conv .* is for --model rd-ae, not ae"):
        model_config("ae", digits.shape, net="fully-conv")
    with pytest.raises(AekitError, match="--net fully-conv needs images"):
        model_config("rd-ae", (64,), net="fully-conv")
    with pytest.raises(AekitError, match="drop them or use --net conv"):
        model_config("rd-ae", digits.shape, net="fully-conv", likelihood="gaussian", standardize=True)
    vector = build_model(model_config("rd-ae", digits.shape, code_dim=4, hidden=(16,)))
    with pytest.raises(AekitError, match="only a fully convolutional rate-distortion run codes images of any size"):
        compress_images(vector, _images(digits))
    _, model, _ = trained
    with pytest.raises(DataError, match=r"image 0 has shape \(3, 8, 8\); the run codes images of 1 channel"):
        compress_images(model, [np.zeros((3, 8, 8), np.float32)])
    with pytest.raises(DataError, match="image 0 .* intensities"):
        compress_images(model, [np.full((1, 5, 5), 2.0, np.float32)])
    with pytest.raises(AekitError, match="code maps have too many values to try one at a time; drop --search"):
        compress(model, digits.x_test[:4], search=True)
    with pytest.raises(AekitError, match="code maps are not searched"):
        model.searched_symbols(digits.x_test[:4])


@pytest.fixture(scope="module")
def coded(trained, digits):
    _, model, _ = trained
    return model, compress_images(model, _images(digits))


@pytest.fixture(scope="module")
def named(trained, digits):
    _, model, _ = trained
    return model, compress_images(model, _images(digits), ["a.png", "b/c.png", "d.jpg", "e", "ü.tif"])


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b[:-1], "truncated: its header promises"),
        (lambda b: b[: LISTING + 8], "truncated: its header promises"),
        (lambda b: set_field(b, 24, "<I", 2**32 - 1), "truncated: its header promises"),
        (lambda b: set_field(b, LISTING + 8, "<I", 3), "code map of 3x4 for an image of 8x8, not the run's 4x4"),
        (lambda b: set_field(b, LISTING + 4, "<I", 0), "an image or code map of no pixels"),
        (lambda b: set_field(b, LISTING, "<I", 2**31), "more than 16777216 a side"),
        (
            lambda b: set_field(set_field(b, LISTING, "<I", 2000), LISTING + 8, "<I", 1000),
            "claims .* codes, more than its",
        ),
        (lambda b: set_field(b, 32, "<I", 12345), "other probability tables"),
        (lambda b: set_field(b, 28, "<I", 9), "codes of 9 dimensions but the run's have 4"),
    ],
)
def test_a_damaged_version_4_file_is_one_line(coded, damage, match):
    model, data = coded
    with pytest.raises(DataError, match=match) as error:
        decompress_images(model, damage(data))
    assert "\n" not in str(error.value)


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize("version", [4, 5])
def test_fuzzed_version_4_and_5_files_give_data_errors_only(coded, named, version, data):
    model, valid = coded if version == 4 else named
    blob = bytearray(valid)
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    else:  # a header, listing or names field set to anything, the checksum made right
        names = [LISTING + 16 * 5] if version == 5 else []  # the names' bytes; then the first name's length (<H)
        offset = data.draw(st.sampled_from([24, 28, 32, 36, *range(LISTING, LISTING + 16 * 5, 4), *names]))
        blob = bytearray(set_field(bytes(blob), offset, "<I", data.draw(st.integers(0, 2**32 - 1))))
        if version == 5 and data.draw(st.booleans()):
            blob = bytearray(set_field(bytes(blob), LISTING + 16 * 5 + 4, "<H", data.draw(st.integers(0, 2**16 - 1))))
    try:
        out = decompress_images(model, bytes(blob))
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert all(np.isfinite(image).all() for image in out)


def test_a_map_run_saves_loads_and_keeps_its_code_shape(trained):
    run, model, _ = trained
    again = run_folder.load(run)
    assert again.code_shape == model.code_shape and run_folder.fingerprint(again) == run_folder.fingerprint(model)


def test_an_array_of_images_of_another_size_is_coded_at_its_own_size(digits, trained, tmp_path, capsys):
    run, _, _ = trained
    model = aekit.load(run)
    images = np.stack([image[:, :13, :5] for image in _images(digits)[3:4] * 3])  # three 13x5 images, uint8 below
    np.save(tmp_path / "small.npy", (images * 255).round().astype(np.uint8))
    np.save(tmp_path / "flat.npy", (images * 255).round().astype(np.uint8)[:, 0])  # (n, h, w): one channel
    for name in ("small.npy", "flat.npy"):
        out = tmp_path / f"{name}.aekc"
        assert main(["compress", str(run), str(tmp_path / name), "--out", str(out)]) == 0
        back = decompress_images(model, out.read_bytes())
        assert [b.shape for b in back] == [(1, 13, 5)] * 3
        pixels = torch.from_numpy(np.load(tmp_path / name).reshape(3, 1, 13, 5).astype(np.float32) / 255)
        with torch.no_grad():  # coded as one batch, decoded an image at a time (as decompression does)
            expected = [model.decode_map(code[None], 13, 5)[0].numpy() for code in model.map_symbols(pixels)]
        np.testing.assert_array_equal(np.stack(back), np.stack(expected))
        # Decompressed to an array, in the layout it was given: (n, 13, 5) for flat.npy, not (n, 1, 13, 5).
        assert main(["decompress", str(run), str(out), "--out", str(tmp_path / f"back-{name}")]) == 0
        restored = np.load(tmp_path / f"back-{name}")
        assert restored.shape == np.load(tmp_path / name).shape
        np.testing.assert_array_equal(restored.reshape(3, 1, 13, 5), np.stack(expected))
    np.save(tmp_path / "wide.npy", np.full((2, 1, 9, 9), 2.0, np.float32))
    capsys.readouterr()
    assert main(["compress", str(run), str(tmp_path / "wide.npy"), "--out", str(tmp_path / "w.aekc")]) == 2
    assert "intensities" in capsys.readouterr().err and not (tmp_path / "w.aekc").exists()
