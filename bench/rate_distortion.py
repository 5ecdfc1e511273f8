"""The rate-distortion auto-encoder (``--model rd-ae``) on the MNIST test set at several values of lambda: bytes per
image of its entropy-coded compressed file against the squared error per image of what comes back; written to
bench/rate_distortion_mnist.json (rows of method, lambda, bytes_per_image, sse_per_image, psnr_db, for the curves of
bench/compress.py) and to bench/RESULTS.md ("## Rate-distortion auto-encoder on MNIST"), where it is set beside the
fixed-bit AE of "## Compression" (trained with the same settings).

Bytes per image are the size of one compressed file holding all 10,000 test images
(:func:`aekit.uses.compress.compress`, codec version 3: 44 bytes of header and checksum a file) divided by 10,000,
decoded by :func:`aekit.uses.compress.decompress`. ``model_bytes_per_image`` is the RD-AE's own
estimate, -log2 p(code) / 8 under its learned prior; ``p5_p95_bytes`` the spread of that estimate over the images:
the bytes follow the content. Each lambda gives two rows: its codes rounded (``aekit compress``) and searched for
(``aekit compress --search``: rate-distortion optimized quantization, the same model and decoder), with the images
each compresses a second (one thread where ``OMP_NUM_THREADS=1``).

Beside it, in the same run and trained alike (same MLP, loss, epochs and seed), the fixed-bit AE of ``aekit compress
--bits B`` at the code sizes and bit depths of ``--fixed-bit`` (default: the issue's two, AE-16 at 4 bits and AE-32 at
8 bits), and for each the RD-AE's bytes at the same squared error (interpolated between its lambdas).

    python -m bench.rate_distortion --data-dir ../shared/data/mnist

Training the seven models takes about two hours on one CPU thread (15 minutes a model); ``--checkpoints DIR`` lets
runs of parts of it (``--lambdas``, ``--fixed-bit``) go side by side (one that comes to a model another is training
waits for it) and a last run of the whole train nothing again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aekit import codec
from aekit.evaluation.measures import psnr
from aekit.models import model_config
from aekit.report.plots import markdown_table
from aekit.uses.compress import compress, decompress
from bench.mnist_runs import Bench, parser

HEADING = "## Rate-distortion auto-encoder on MNIST"
JSON = Path(__file__).with_name("rate_distortion_mnist.json")
LAMBDAS = (0.03, 0.3, 0.5, 0.7, 1.0)
FIXED_BIT = "16:4,32:8"  # code size:bits of the fixed-bit AE set beside it


def sse(output: np.ndarray, clean: np.ndarray) -> float:
    return float(((output.astype(np.float64) - clean) ** 2).reshape(len(clean), -1).sum(1).mean())


def rd_rows(bench: Bench, hidden: tuple[int, ...], code_dim: int) -> list[dict]:
    """Two rows a lambda, its codes rounded and searched for (``aekit compress --search``): bytes per image of one
    compressed file of the test images, the squared error and PSNR of its decompression, the model's own estimate
    of the bytes, and the images compressed a second (one file of them all, whole)."""
    clean, rows = bench.data.x_test, []
    for rate_lambda in bench.args.lambdas:
        model = bench.fit(
            model_config("rd-ae", bench.data.shape, code_dim=code_dim, hidden=hidden, rate_lambda=rate_lambda)
        )
        for search in (False, True):
            started = time.perf_counter()
            data = compress(model, clean, search=search)
            seconds = time.perf_counter() - started
            restored = decompress(model, data)
            codes = codec.decode_entropy(codec.decode(data, "file")[0], model.probability_tables(), "file")
            with torch.no_grad():
                estimate = model.prior.rate_bits(torch.from_numpy(codes).float()).numpy() / 8
            row = {
                "method": "RD-AE, searched" if search else "RD-AE",
                "setting": f"lambda {rate_lambda}",
                "lambda": rate_lambda,
                "code": code_dim,
                "bytes_per_image": len(data) / len(clean),
                "sse_per_image": sse(restored, clean),
                "psnr_db": psnr(restored, clean),
                "model_bytes_per_image": float(estimate.mean()),
                "p5_p95_bytes": "{:.1f}-{:.1f}".format(*np.percentile(estimate, [5, 95])),
                "images_per_second": len(clean) / seconds,
            }
            rows.append(row)
            bench.say(
                f"  {row['method']} {row['setting']}: {row['bytes_per_image']:.2f} B, sse {row['sse_per_image']:.3f}"
            )
    return rows


def fixed_bit_rows(bench: Bench, hidden: tuple[int, ...], points: list[tuple[int, int]]) -> list[dict]:
    """The fixed-bit AE trained alike, one row per (code size, bits) of ``points``: bytes per image of its compressed
    file of the test images, and the squared error and PSNR of what comes back."""
    clean, rows, models = bench.data.x_test, [], {}
    for code_dim, bits in points:
        if code_dim not in models:
            models[code_dim] = bench.fit(model_config("ae", bench.data.shape, code_dim=code_dim, hidden=hidden))
        started = time.perf_counter()
        data = compress(models[code_dim], clean, bits)
        seconds = time.perf_counter() - started
        restored = decompress(models[code_dim], data)
        rows.append(
            {
                "method": "AE (fixed bits)",
                "setting": f"{bits} bits",
                "code": code_dim,
                "bytes_per_image": len(data) / len(clean),
                "sse_per_image": sse(restored, clean),
                "psnr_db": psnr(restored, clean),
                "images_per_second": len(clean) / seconds,
            }
        )
        bench.say(
            f"  AE-{code_dim} at {bits} bits: {rows[-1]['bytes_per_image']:.2f} B, sse {rows[-1]['sse_per_image']:.3f}"
        )
    return rows


# The figures for the fixed-bit AE as it was (10 epochs): (bytes per image, squared error per image).
FIXED_BIT_BEFORE = ((8.0, 8.9), (32.0, 6.0))


def bytes_at(rows: list[dict], error: float) -> tuple[float, float] | None:
    """The bytes per image a curve of rows needs at a squared error, and the error it gives with them: inside the
    rows' errors, log bytes interpolated linearly in the error between the two rows around it (and that error);
    above them, the bytes of the row of the largest error, which meets it with less (a bound); None below them."""
    ordered = sorted(rows, key=lambda row: row["sse_per_image"])
    errors = np.array([row["sse_per_image"] for row in ordered])
    if not len(errors) or error < errors[0]:
        return None
    if error > errors[-1]:
        return ordered[-1]["bytes_per_image"], float(errors[-1])
    return float(np.exp(np.interp(error, errors, np.log([row["bytes_per_image"] for row in ordered])))), error


def verdict(rd: list[dict], fixed: list[dict]) -> str:
    """For each fixed-bit point (trained alike, and the issue's figures), the bytes each RD-AE curve needs at its
    squared error, and their fraction of the fixed-bit bytes."""
    points = [(f"AE-{row['code']} at {row['setting']}", row["bytes_per_image"], row["sse_per_image"]) for row in fixed]
    points += [(f"the issue's fixed-bit AE (10 epochs), {b:.0f} bytes", b, e) for b, e in FIXED_BIT_BEFORE]
    lines = []
    for label, nbytes, error in points:
        parts = []
        for method in dict.fromkeys(row["method"] for row in rd):
            needed = bytes_at([row for row in rd if row["method"] == method], error)
            if needed is None:
                parts.append(f"{method} outside its errors")
            elif needed[1] < error:
                parts.append(
                    f"{method} at most {needed[0]:.2f} ({needed[0] / nbytes:.2f}: those bytes give a lower error, "
                    f"{needed[1]:.2f})"
                )
            else:
                parts.append(f"{method} {needed[0]:.2f} ({needed[0] / nbytes:.2f})")
        lines.append(
            f"- {label}: {nbytes:.2f} bytes at a squared error of {error:.2f}; "
            + ("; ".join(parts) or "no RD-AE curve in this run")
            + "."
        )
    return "\n".join(lines)


def _points(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in point.split(":")) for point in text.split(",") if point]


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0], epochs=30)
    args.add_argument("--hidden", default="1024,512", help="MLP hidden widths, comma-separated")
    args.add_argument(
        "--code-dim", type=int, default=32, help="the RD-AE's code size (the rate prunes what it needs not)"
    )
    args.add_argument("--lambdas", type=lambda text: [float(v) for v in text.split(",") if v], default=list(LAMBDAS))
    args.add_argument("--json", type=Path, default=JSON, help="where the rows go, for bench/compress.py's curves")
    args.add_argument(
        "--fixed-bit",
        type=_points,
        default=_points(FIXED_BIT),
        help=f"code:bits of the fixed-bit AE (default {FIXED_BIT})",
    )
    args = args.parse_args(argv)
    bench = Bench(args)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    rd = rd_rows(bench, hidden, args.code_dim)
    fixed = fixed_bit_rows(bench, hidden, args.fixed_bit)
    rows = rd + fixed
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    columns = ["method", "setting", "code", "bytes_per_image", "model_bytes_per_image", "p5_p95_bytes"]
    formats = {
        "bytes_per_image": ".2f",
        "model_bytes_per_image": ".2f",
        "sse_per_image": ".3f",
        "psnr_db": ".2f",
        "images_per_second": ".0f",
    }
    text = "\n".join(
        [
            HEADING,
            "",
            "`bench/rate_distortion.py`: the rate-distortion auto-encoder (`--model rd-ae`: distortion + lambda x "
            "rate, uniform noise in training, rounding at test, Balle's factorized prior; lambda in nats of "
            "cross-entropy per bit) on the 10,000 MNIST test images, its integer codes entropy-coded by "
            "`aekit compress` (codec version 3, constriction's range coder), rounded or searched for (`--search`). "
            f"An MLP {'-'.join(map(str, hidden))} and the cross-entropy loss; beside it the fixed-bit AE (`aekit "
            "compress --bits B`) trained alike in the same run. Bytes per image: one compressed file of all the test "
            "images / 10,000, headers included; `model_bytes_per_image`: the RD-AE's -log2 p(code) / 8 under its "
            "prior, and `p5_p95_bytes` its spread over the images. Squared error per image: the sum over the 784 "
            "pixels of intensities in [0, 1] of what comes back. `images_per_second`: of compressing them. JSON rows "
            "for the "
            f"curves: `bench/{args.json.name}`.",
            "",
            bench.settings_line(),
            markdown_table(rows, columns + ["sse_per_image", "psnr_db", "images_per_second"], formats).rstrip(),
            "",
            "At equal squared error, the bytes per image each RD-AE curve needs (and their fraction of the fixed-bit "
            "bytes), against the fixed-bit AE trained alike and against the issue's figures for it as it was:",
            "",
            verdict(rd, fixed),
            "",
        ]
    )
    bench.publish(HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
