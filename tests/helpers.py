"""What several test files share: running the command line in the test's process, checking that a refusal is one
line and changed nothing, editing a compressed file's fields with its checksum kept right, and smooth colour images
for the photo codecs."""

import hashlib
import struct
import zlib

import numpy as np
import torch

from aekit.cli import main


def run_cli(capsys, *argv):
    """Run the CLI in this process; return (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def snapshot(folder):
    """Every file under ``folder`` with its content hash: to check that a failed command changed nothing."""
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(capsys, folder, *argv, match):
    before = snapshot(folder)
    status, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (status, err)
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err
    assert snapshot(folder) == before


def with_crc(body: bytes) -> bytes:
    """``body`` and its CRC-32, as a compressed file ends."""
    return body + struct.pack("<I", zlib.crc32(body))


def set_field(data: bytes, offset: int, fmt: str, value) -> bytes:
    """A compressed file with a field set and its checksum made right again."""
    blob = bytearray(data[:-4])
    struct.pack_into(fmt, blob, offset, value)
    return with_crc(bytes(blob))


# Six sizes (width, height) of photos, from 20x17 to 33x29: a folder of mixed sizes for patch training.
PHOTO_SIZES = ((20, 17), (33, 29), (25, 21), (30, 18), (22, 27), (28, 24))


def photo_folder(folder, sizes=PHOTO_SIZES, colour=()):
    """A folder of random 8-bit PNG photos of ``sizes`` (p0.png, p1.png, ...), grey but for the indices ``colour``
    (RGB); returns the folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (width, height) in enumerate(sizes):
        shape = (height, width, 3) if i in colour else (height, width)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def planted_table(rows=60, anomalies=6, seed=0):
    """A table of ``rows`` x 4 columns whose normal rows lie near a plane and whose first ``anomalies`` rows are drawn
    far from it, and its labels (1: planted anomaly, 0: normal row), as ADBench labels its tables."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2)) @ rng.normal(size=(2, 4)) + 0.05 * rng.normal(size=(rows, 4))
    x[:anomalies] = 4 * rng.normal(size=(anomalies, 4))
    y = (np.arange(rows) < anomalies).astype(np.int64)
    return x, y


def smooth_images(n, size=32, seed=0):
    """n colour images (n, 3, size, size) of smooth sine waves in [0.2, 0.8], seeded: what a photo codec learns fast."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    waves = [
        0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(0.3, 1.2) * xx + rng.uniform(0.3, 1.2) * yy + rng.uniform(0, 1)))
        for _ in range(3 * n)
    ]
    return torch.from_numpy(np.stack(waves).reshape(n, 3, size, size).astype(np.float32))
