"""Rate and distortion on the MNIST test set: bytes per image against squared error per image, for aekit's
compressed files (AE and VAE codes at several code sizes and bit depths), for PCA codes quantized the same way, and
for PNG and JPEG (Pillow) of the same images; written to bench/RESULTS.md ("## Compression") with a plot.

Our bytes per image are the size of one compressed file holding all 10,000 test images (header, quantization ranges
and checksum included) divided by 10,000. PNG and JPEG are measured two ways: one file per 28x28 image (as images
are usually stored: their headers dominate at this size), and one 2800x2800 mosaic of all the images (headers shared),
divided by 10,000.

    python bench/compress.py --data-dir ../shared/data/mnist
"""
from __future__ import annotations

import io
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from aekit.apps import compress, decompress  # noqa: E402
from aekit.models import ModelSpec  # noqa: E402
from aekit.report import markdown_table, tile  # noqa: E402
from mnist_runs import Bench, parser  # noqa: E402

HEADING = "## Compression"


def sse(output: np.ndarray, clean: np.ndarray) -> float:
    return float(((output.astype(np.float64) - clean) ** 2).reshape(len(clean), -1).sum(1).mean())


def image_bytes(pixels: np.ndarray, kind: str, quality: int | None) -> tuple[int, np.ndarray]:
    """The size of ``pixels`` (uint8, 2-D) saved as PNG or JPEG at ``quality``, and the decoded pixels."""
    buffer = io.BytesIO()
    options = {"optimize": True} if kind == "PNG" else {"quality": quality, "optimize": True}
    Image.fromarray(pixels).save(buffer, kind, **options)
    return buffer.tell(), np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def codec_rows(clean: np.ndarray) -> list[dict]:
    pixels = (clean[:, 0] * 255).round().astype(np.uint8)
    mosaic_pixels = (tile(clean, columns=100)[..., 0] * 255).round().astype(np.uint8)
    n = len(pixels)
    rows = []
    for kind, qualities in (("PNG", [None]), ("JPEG", [10, 25, 50, 75, 90])):
        for quality in qualities:
            name = kind if quality is None else f"{kind} q{quality}"
            sizes, decoded = zip(*(image_bytes(p, kind, quality) for p in pixels))
            rows.append({"method": f"{name}, one file per image", "code": "-", "bits": "-",
                         "bytes_per_image": sum(sizes) / n, "sse_per_image": sse(np.stack(decoded)[:, None] / 255, clean)})
            mosaic_size, mosaic = image_bytes(mosaic_pixels, kind, quality)
            rows_of_images = mosaic.shape[0] // 28
            back = mosaic.reshape(rows_of_images, 28, 100, 28).transpose(0, 2, 1, 3).reshape(-1, 1, 28, 28)[:n]
            rows.append({"method": f"{name}, one mosaic", "code": "-", "bits": "-",
                         "bytes_per_image": mosaic_size / n, "sse_per_image": sse(back / 255, clean)})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0], epochs=10)
    args.add_argument("--code-dims", default="8,16,32", help="code sizes, comma-separated")
    args.add_argument("--bits", default="2,4,6,8", help="bit depths, comma-separated")
    args.add_argument("--hidden", default="512,256", help="MLP hidden widths, comma-separated")
    args = args.parse_args(argv)
    bench = Bench(args)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    bit_depths = [int(b) for b in args.bits.split(",")]
    clean = bench.data.x_test
    rows = []
    for code_dim in (int(c) for c in args.code_dims.split(",")):
        for name in ("pca", "ae", "vae"):
            model = bench.fit(ModelSpec(name, bench.data.shape, code_dim=code_dim,
                                        **({} if name == "pca" else {"hidden": hidden})))
            for bits in bit_depths:
                data = compress(model, clean, bits)
                rows.append({"method": name.upper(), "code": code_dim, "bits": bits,
                             "bytes_per_image": len(data) / len(clean),
                             "sse_per_image": sse(decompress(model, data), clean)})
            bench.say(f"{name} code {code_dim}: " + ", ".join(
                f"{r['bits']} bits {r['bytes_per_image']:.1f} B {r['sse_per_image']:.2f}" for r in rows[-len(bit_depths):]))
    baselines = codec_rows(clean)
    plot(args.results.parent / "figures" / "compress.png", rows, baselines)
    text = "\n".join([
        HEADING, "", "`bench/compress.py`: bytes per MNIST test image against the squared error per image (sum over "
        "the 784 pixels of intensities in [0, 1]) of what comes back. aekit: one compressed file of all 10,000 test "
        "images (`aekit compress`: each code dimension quantized uniformly to B bits between its minimum and "
        "maximum, 36 bytes of header and checksum plus 8 bytes per code dimension for the ranges), decoded by "
        f"`aekit decompress`; the AE and VAE (posterior mean as the code) are MLPs {'-'.join(map(str, hidden))} "
        "with the cross-entropy loss, PCA is fitted on the training images. PNG and JPEG (Pillow, optimize=True) "
        "of the 8-bit images: one file per image, and one 2800x2800 mosaic of all of them.", "",
        bench.settings_line(),
        markdown_table(rows + baselines, ["method", "code", "bits", "bytes_per_image", "sse_per_image"],
                       {"bytes_per_image": ".1f", "sse_per_image": ".3f"}).rstrip(), "",
        "Plot: `bench/figures/compress.png` (log bytes per image against squared error per image).", ""])
    bench.publish(HEADING, text)
    return 0


def plot(path, rows: list[dict], baselines: list[dict]) -> None:
    path.parent.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (method, code), marker in zip(dict.fromkeys((r["method"], r["code"]) for r in rows), "osd^v<>ph*"):
        points = [(r["bytes_per_image"], r["sse_per_image"]) for r in rows if (r["method"], r["code"]) == (method, code)]
        ax.plot(*zip(*points), marker=marker, markersize=4, label=f"{method} code {code}")
    for suffix, style in ((", one file per image", "k--"), (", one mosaic", "k:")):
        jpeg = [(r["bytes_per_image"], r["sse_per_image"]) for r in baselines
                if r["method"].startswith("JPEG") and r["method"].endswith(suffix)]
        ax.plot(*zip(*jpeg), style, marker="x", label="JPEG q10-90" + suffix)
        png = next(r for r in baselines if r["method"] == "PNG" + suffix)
        ax.plot(png["bytes_per_image"], png["sse_per_image"], "k*" if "file" in suffix else "k+", markersize=9,
                label=f"PNG (lossless){suffix}: {png['bytes_per_image']:.0f} B")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (log scale)")
    ax.set_ylabel("squared error per image")
    ax.set_title("MNIST test set: rate and distortion", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
